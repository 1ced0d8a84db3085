#!/usr/bin/env bash
# Runs Prometheus in the foreground for local monitoring of latam (`make monitor`).
#
#   scripts/monitor.sh [extra prometheus flags...]
#
# Listens on 127.0.0.1:9090 only, scrapes `latam serve` on 127.0.0.1:8000 and, when
# LATAM_MONITOR_WORKER=host:port names one, a separate `latam worker`
# (deploy/prometheus/prometheus.yml), evaluates the latam recording and alerting rules, and
# keeps its data under .latam/prometheus, with exemplar storage on (the trace ids of
# latam's latency and freshness histograms, linked from the Grafana panels). Alertmanager
# runs beside it on 127.0.0.1:9093 (deploy/alertmanager/alertmanager.yml) and stops with it.
#
# Installs Debian's `prometheus` package when the binary is missing. Only the binary is
# used: the package's system service is never started (and stopped if a systemd host
# started it anyway).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
config=deploy/prometheus/prometheus.yml
data_dir=${LATAM_DATA_DIR:-.latam}/prometheus
listen=127.0.0.1:9090

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# policy-rc.d exit code 101 makes invoke-rc.d and deb-systemd-invoke skip the start.
install_prometheus_package() {
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" \
        || { [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"; return 1; }
    [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"
    return 0
}

stop_system_service() {
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet "$1" 2>/dev/null; then
        echo "stopping the system $1 service (this script runs its own)" >&2
        as_root systemctl stop "$1"
    fi
}

if ! command -v prometheus >/dev/null 2>&1; then
    echo "prometheus not found: installing the Debian package" >&2
    install_prometheus_package prometheus
fi
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    echo "prometheus-alertmanager not found: installing the Debian package" >&2
    install_prometheus_package prometheus-alertmanager
fi
stop_system_service prometheus
stop_system_service prometheus-alertmanager

# The separate worker is scraped only when it runs: a target nobody runs is down and
# would fire LatamTargetDown on a healthy system.
targets=deploy/prometheus/targets
mkdir -p "$targets"
if [[ -n ${LATAM_MONITOR_WORKER:-} ]]; then
    printf '[{"targets": ["%s"], "labels": {"env": "local"}}]\n' "$LATAM_MONITOR_WORKER" \
        > "$targets/latam-worker.json"
else
    rm -f "$targets/latam-worker.json"
fi

mkdir -p "$data_dir"
am_listen=127.0.0.1:9093
mkdir -p "$data_dir/alertmanager"
prometheus-alertmanager \
    --config.file=deploy/alertmanager/alertmanager.yml \
    --storage.path="$data_dir/alertmanager" \
    --web.listen-address="$am_listen" \
    --cluster.listen-address= \
    >"$data_dir/alertmanager.log" 2>&1 &
am_pid=$!
trap 'kill "$am_pid" 2>/dev/null || true' EXIT
echo "Alertmanager on http://$am_listen (log $data_dir/alertmanager.log)" >&2

echo "Prometheus on http://$listen (config $config, data $data_dir); Ctrl-C to stop" >&2
prometheus \
    --config.file="$config" \
    --storage.tsdb.path="$data_dir" \
    --storage.tsdb.retention.time=15d \
    --web.listen-address="$listen" \
    --web.enable-lifecycle \
    --enable-feature=exemplar-storage \
    "$@"
