#!/usr/bin/env bash
# Checks the Prometheus configuration and rules, runs the rule unit tests, evaluates the
# rules on what a healthy local `latam serve` exposes (none may fire), and checks the
# Alertmanager configuration and its routing cases (deploy/alertmanager/routing-cases.txt).
#
#   scripts/ci/promtool.sh
#
# Installs Debian's `prometheus` and `prometheus-alertmanager` packages (promtool, amtool)
# when missing, without letting either package start a service. Prints one "ok:" or "FAIL:"
# line per step and exits non-zero if any step failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
prom_dir=deploy/prometheus

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Install the package with service start-up denied (policy-rc.d exit code 101 is
# honoured by invoke-rc.d and deb-systemd-invoke), then make sure nothing runs.
install_debian_package() {
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" \
        || { [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"; return 1; }
    [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet "$1" 2>/dev/null; then
        as_root systemctl stop "$1"
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
    step "install promtool (Debian package prometheus)" install_debian_package prometheus
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

# A healthy `make run`, as `make monitor` scrapes it, fires no alert (needs the app's
# virtualenv: `make venv`).
if [[ -x .venv/bin/python ]]; then
    step "a healthy latam serve fires no alert (scripts/ci/local_alerts.py)" \
        .venv/bin/python scripts/ci/local_alerts.py
else
    echo "FAIL: .venv missing: run make venv first (scripts/ci/local_alerts.py needs it)"
    failures=$((failures + 1))
fi

# Alertmanager: the configuration loads, and every routing case reaches its receiver.
am_dir=deploy/alertmanager
if ! command -v amtool >/dev/null 2>&1; then
    step "install amtool (Debian package prometheus-alertmanager)" install_debian_package prometheus-alertmanager
fi
if command -v amtool >/dev/null 2>&1; then
    step "amtool check-config $am_dir/alertmanager.yml" amtool check-config "$am_dir/alertmanager.yml"
    while read -r receiver labels; do
        [[ -z $receiver || $receiver == \#* ]] && continue
        # shellcheck disable=SC2086 # the labels are separate arguments
        step "amtool route: $labels -> $receiver" amtool config routes test \
            --config.file="$am_dir/alertmanager.yml" --verify.receivers="$receiver" $labels
    done <"$am_dir/routing-cases.txt"
else
    echo "FAIL: amtool not available"
    failures=$((failures + 1))
fi

if [[ $failures -gt 0 ]]; then
    echo "$failures step(s) failed"
    exit 1
fi
