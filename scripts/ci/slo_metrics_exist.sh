#!/usr/bin/env bash
# Prints `true` when Cloud Monitoring already knows every metric the SLOs are built on, else
# `false`; exits non-zero when it cannot tell (so a plan never drops existing SLOs on a
# transient error). Cloud Monitoring rejects an SLO on a metric it has never received: the
# pipeline passes this as TF_VAR_slos_enabled (infra/README.md, bootstrap step 6).
#
#   ACCESS_TOKEN=$(gcloud auth print-access-token) scripts/ci/slo_metrics_exist.sh PROJECT_ID
set -euo pipefail

project=${1:?usage: slo_metrics_exist.sh PROJECT_ID}
: "${ACCESS_TOKEN:?set ACCESS_TOKEN to an OAuth access token}"
metrics=(
  "prometheus.googleapis.com/latam_http_requests_total/counter"                 # availability
  "prometheus.googleapis.com/latam_http_request_duration_seconds/histogram"     # read latency
  "prometheus.googleapis.com/latam_message_freshness_seconds/histogram"         # freshness
)
answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
for metric in "${metrics[@]}"; do
  curl -fsS --retry 3 -G -H "Authorization: Bearer ${ACCESS_TOKEN}" -o "$answer" \
    --data-urlencode "filter=metric.type=\"${metric}\"" \
    "https://monitoring.googleapis.com/v3/projects/${project}/metricDescriptors"
  if [ "$(jq -r '(.metricDescriptors // []) | length' "$answer")" -eq 0 ]; then
    echo "not yet in Cloud Monitoring: ${metric}" >&2
    echo false
    exit 0
  fi
done
echo true
