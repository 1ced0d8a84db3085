#!/bin/sh
# Container entry point: maps the platform's $PORT onto the latam command line.
#   api     -> latam api --host $LATAM_HOST --port $PORT   (Cloud Run, App Engine)
#   worker  -> latam worker, health/metrics on $PORT when the platform sets one
#   other   -> latam <args>  (migrate, serve, topics, dead-letters, pubsub ...)
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift

case "$role" in
  api)
    exec latam api --host "${LATAM_HOST:-0.0.0.0}" --port "${PORT:-${LATAM_PORT:-8080}}" "$@"
    ;;
  worker)
    if [ -n "${PORT:-}" ] && [ -z "${LATAM_WORKER_METRICS_PORT:-}" ]; then
      LATAM_WORKER_METRICS_PORT="$PORT"
      export LATAM_WORKER_METRICS_PORT
    fi
    exec latam worker "$@"
    ;;
  latam)
    exec latam "$@"
    ;;
  *)
    exec latam "$role" "$@"
    ;;
esac
