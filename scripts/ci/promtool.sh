#!/usr/bin/env bash
# Checks the Prometheus configuration and rules, and runs the rule unit tests.
#
#   scripts/ci/promtool.sh
#
# Installs Debian's `prometheus` package (which ships promtool) when promtool is missing,
# without letting the package start a Prometheus service. Prints one "ok:" or "FAIL:"
# line per step and exits non-zero if any step failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
prom_dir=deploy/prometheus

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Install the package with service start-up denied (policy-rc.d exit code 101 is
# honoured by invoke-rc.d and deb-systemd-invoke), then make sure nothing runs.
install_prometheus_package() {
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
        || { [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"; return 1; }
    [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet prometheus 2>/dev/null; then
        as_root systemctl stop prometheus
    fi
}

failures=0

# step NAME COMMAND...: runs COMMAND, prints one line, shows the output only on failure.
step() {
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then
        echo "ok: $name"
    else
        echo "FAIL: $name"
        printf '%s\n' "$output" | sed 's/^/    /'
        failures=$((failures + 1))
    fi
}

if ! command -v promtool >/dev/null 2>&1; then
    step "install promtool (Debian package prometheus)" install_prometheus_package
    command -v promtool >/dev/null 2>&1 || { echo "FAIL: promtool not available"; exit 1; }
fi

shopt -s nullglob
rule_files=("$prom_dir"/rules/*.yml)
test_files=("$prom_dir"/tests/*.yml)
if [[ ${#rule_files[@]} -eq 0 || ${#test_files[@]} -eq 0 ]]; then
    echo "FAIL: no rule files or no rule tests under $prom_dir"
    exit 1
fi

for file in "${rule_files[@]}"; do
    step "promtool check rules $file" promtool check rules "$file"
done
step "promtool check config $prom_dir/prometheus.yml" promtool check config "$prom_dir/prometheus.yml"
# The rule tests are independent and CPU-bound: run them in parallel, report in order.
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
for i in "${!test_files[@]}"; do
    (
        status=0
        promtool test rules "${test_files[$i]}" >"$results/$i.out" 2>&1 || status=$?
        echo "$status" >"$results/$i.rc"
    ) &
done
wait
for i in "${!test_files[@]}"; do
    step "promtool test rules ${test_files[$i]}" \
        sh -c 'cat "$1"; exit "$(cat "$2")"' _ "$results/$i.out" "$results/$i.rc"
done

if [[ $failures -gt 0 ]]; then
    echo "$failures step(s) failed"
    exit 1
fi
