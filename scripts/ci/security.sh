#!/usr/bin/env bash
# Supply-chain and static security checks: bandit over src, pip-audit over the locked
# dependencies (requirements/lock.txt), the image's runtime lock pinned to the same
# versions, and a secrets scan of the tracked files against the committed .secrets.baseline.
# Tools live in .venv-sec (pinned in
# requirements/security-tools.txt), apart from the application's virtualenv and from
# .venv-tools, whose checkov pins conflict. Prints one ok:/FAIL:/skip: line per check;
# exits 1 if any check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv-sec"
REQS="$ROOT/requirements/security-tools.txt"
PYTHON="${PYTHON:-python3}"
LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT

# (Re)create the tools virtualenv when it is missing or the pins changed.
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing security tools into .venv-sec"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    -r "$REQS" >"$LOG_DIR/pip.log" 2>&1 || { cat "$LOG_DIR/pip.log"; exit 1; }
  echo "$want" >"$stamp"
fi
BIN="$VENV/bin"

failed=0
report() { # name, status, log
  if [ "$2" -eq 0 ]; then
    echo "ok: $1"
  else
    echo "FAIL: $1"
    sed 's/^/    /' "$3"
    failed=1
  fi
}

# 1. Static analysis of the product's code; each accepted finding carries a # nosec reason.
status=0
"$BIN/bandit" -r src -q >"$LOG_DIR/bandit.log" 2>&1 || status=$?
report "bandit -r src" "$status" "$LOG_DIR/bandit.log"

# 2. Known vulnerabilities in the locked dependencies (PyPI's vulnerability API).
if "$BIN/python" - <<'PY' >/dev/null 2>&1; then
import urllib.request

urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=10).read(1)
PY
  status=0
  "$BIN/pip-audit" --progress-spinner off --disable-pip --no-deps \
    -r requirements/lock.txt -r requirements/build.txt >"$LOG_DIR/audit.log" 2>&1 || status=$?
  report "pip-audit -r requirements/lock.txt -r requirements/build.txt" "$status" "$LOG_DIR/audit.log"
else
  echo "skip: pip-audit (pypi.org is not reachable; no vulnerability data)"
fi

# 3. The image installs requirements/runtime.txt: the same versions as the audited lock.
status=0
"$BIN/python" - >"$LOG_DIR/runtime.log" 2>&1 <<'PY' || status=$?
import re
import sys

def pins(path):
    text = open(path, encoding="utf-8").read()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", text, re.M))

lock, runtime = pins("requirements/lock.txt"), pins("requirements/runtime.txt")
drift = {name: (version, lock.get(name)) for name, version in runtime.items() if lock.get(name) != version}
for name, (shipped, audited) in sorted(drift.items()):
    print(f"{name}: runtime.txt {shipped}, lock.txt {audited}")
print(f"{len(runtime)} runtime pins, {len(drift)} differ from the audited lock")
sys.exit(1 if drift or not runtime else 0)
PY
report "requirements/runtime.txt pins = requirements/lock.txt pins" "$status" "$LOG_DIR/runtime.log"

# 4. Secrets in tracked files: any finding not in the reviewed baseline fails.
status=0
git ls-files -z | xargs -0 "$BIN/detect-secrets-hook" --baseline .secrets.baseline \
  >"$LOG_DIR/secrets.log" 2>&1 || status=$?
report "detect-secrets (tracked files vs .secrets.baseline)" "$status" "$LOG_DIR/secrets.log"

exit "$failed"
