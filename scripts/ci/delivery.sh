#!/usr/bin/env bash
# Offline checks of the delivery artifacts: Dockerfile, Terraform, GitHub workflows.
# Tools live in .venv-tools (pinned in requirements/delivery-tools.txt), apart from the
# application's virtualenv. Prints one ok:/FAIL: line per check; exits 1 if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv-tools"
REQS="$ROOT/requirements/delivery-tools.txt"
PYTHON="${PYTHON:-python3}"
export CHECKPOINT_DISABLE=1 # terraform: no version check over the network
LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT

# actionlint uses shellcheck (from Debian) to check the run: scripts too.
if ! command -v shellcheck >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "installing shellcheck (apt)"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck; } \
      >"$LOG_DIR/apt.log" 2>&1 || echo "warning: shellcheck not installed; actionlint skips scripts"
  fi
fi

# (Re)create the tools virtualenv when it is missing or the pins changed.
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing delivery tools into .venv-tools"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    -r "$REQS" >"$LOG_DIR/pip.log" 2>&1 || { cat "$LOG_DIR/pip.log"; exit 1; }
  echo "$want" >"$stamp"
fi
BIN="$VENV/bin"

failed=0
run_check() {
  local name="$1"
  shift
  local log="$LOG_DIR/${name//[^a-zA-Z0-9]/_}.log"
  if "$@" >"$log" 2>&1; then
    echo "ok: $name"
  else
    echo "FAIL: $name"
    sed 's/^/    /' "$log"
    failed=1
  fi
}

check_hcl2() {
  "$BIN/python" - <<'PY'
import pathlib
import sys

import hcl2

files = sorted(pathlib.Path("infra").rglob("*.tf"))
if not files:
    sys.exit("no .tf files under infra/")
bad = 0
for path in files:
    try:
        with path.open() as handle:
            hcl2.load(handle)
    except Exception as exc:  # any parse error fails the check
        print(f"{path}: {exc}")
        bad += 1
print(f"{len(files) - bad}/{len(files)} files parsed")
sys.exit(1 if bad else 0)
PY
}

check_checkov() {
  # Quiet + compact: only failed checks are listed; every skip is explained inline.
  "$BIN/checkov" -d infra --skip-download --quiet --compact --framework terraform secrets \
    --output cli
}

run_check "hadolint Dockerfile" "$BIN/hadolint" Dockerfile
run_check "hcl2 parse infra/**/*.tf" check_hcl2
run_check "terraform fmt -check -recursive infra" "$BIN/terraform" fmt -check -recursive infra
run_check "checkov -d infra" check_checkov
run_check "terraform rules (scripts/ci/terraform_rules.py)" "$BIN/python" scripts/ci/terraform_rules.py
run_check "terraform rules catch their mistakes (--self-test)" "$BIN/python" scripts/ci/terraform_rules.py --self-test
run_check "actionlint .github/workflows" "$BIN/actionlint" -no-color
# The auditor persona reports everything, also what is usually too noisy; every finding is
# fixed or carries an inline "# zizmor: ignore[rule]" with its reason.
run_check "zizmor --persona auditor .github/workflows" "$BIN/zizmor" --offline --no-progress \
  --persona auditor .github/workflows

if [ "$failed" -ne 0 ]; then
  echo "delivery checks: FAILED"
  exit 1
fi
echo "delivery checks: all passed"
