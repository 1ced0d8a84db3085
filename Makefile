# The two commands a newcomer needs: `make run` and `make test`.
# Both create or refresh the local virtualenv first, so they work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help run test unit chaos lint fmt typecheck venv clean bench soak monitor promtool security diagram smoke infra-check slo vendor-check screenshots

# Dependencies come from the hash-checked lock (requirements/lock.txt, regenerated from
# pyproject.toml with the command in its header); the project itself installs on top.
$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

help: ## list the targets and what they do
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## create or refresh the virtualenv from the hash-checked lock

run: venv ## API + worker on http://127.0.0.1:8000 with the embedded defaults
	LATAM_LOG_FORMAT=$${LATAM_LOG_FORMAT:-console} $(BIN)/latam serve

# Coverage of src/latam, in the test process and in the latam processes the tests start
# ([tool.coverage.*] in pyproject.toml): the total is printed and coverage.xml written.
COVERAGE_ARGS := --cov --cov-report=term:skip-covered --cov-report=xml:coverage.xml
# The suite runs in TEST_WORKERS processes (pytest-xdist; much of it waits on servers and
# subprocesses), then the tests marked `serial` (they measure latency) alone, adding to
# the same coverage data: the total printed is the whole suite's.
TEST_WORKERS ?= 2

# Both parts run whatever the first gives (the report and coverage.xml come from the
# second); the status is the first failure's.
test: venv ## the whole test suite, measuring coverage (total printed, coverage.xml written)
	@status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not serial" \
		$(if $(COVERAGE_ARGS),--cov --cov-report= --cov-fail-under=0) || status=$$?; \
	$(BIN)/pytest -m serial $(if $(COVERAGE_ARGS),$(COVERAGE_ARGS) --cov-append) \
		|| { [ $$status -ne 0 ] || status=$$?; }; \
	exit $$status

unit: venv ## the fast unit tests: in process, on in-memory fakes, no server (seconds)
	$(BIN)/pytest tests/unit -q -m "not slow"

chaos: venv ## history checker: hostile producers, kill -9, every broker and store (SEED=1 MINUTES=10)
	PYTHONPATH=. CI=true $(BIN)/python -m tests.chaos.history --seed $${SEED:-1} --minutes $${MINUTES:-10}

lint: venv ## ruff, formatting and strict mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: venv ## strict mypy only
	$(BIN)/mypy

fmt: venv ## fix what ruff can and reformat
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv ## benchmark suite; appends its figures to docs/benchmarks.md (about 40 min; BENCH_ARGS="--only ingest,reads" for a part)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk)
	PYTHONPATH=. $(BIN)/python -m bench.run $(BENCH_ARGS)

soak: venv ## 10 minutes at 2,000 messages/s with concurrent reads (not in CI)
	PYTHONPATH=. $(BIN)/python -m bench.soak --minutes $${MINUTES:-10}

security: ## bandit, pip-audit of the lock, secrets scan
	bash scripts/ci/security.sh

infra-check: venv ## offline: every setting set in Cloud Run or left to its default, every Google call bound in IAM
	$(BIN)/python scripts/ci/infra_contract.py

slo: venv ## regenerate the rules, dashboard row, cloud SLOs and alert twins from deploy/slo/slos.yaml
	$(BIN)/python scripts/slo.py

promtool: ## check and unit-test the Prometheus rules and config
	bash scripts/ci/promtool.sh

monitor: ## Prometheus on 127.0.0.1:9090 scraping a running `make run`, rules loaded
	bash scripts/monitor.sh

smoke: venv ## the post-deploy integration test against BASE_URL (default the local server)
	$(BIN)/python scripts/smoke.py --base-url $${BASE_URL:-http://127.0.0.1:8000}

vendor-check: venv ## the console's vendored htmx, uPlot (and the tests' axe-core) byte-identical to the npm registry's tarballs
	$(BIN)/python scripts/vendor_console.py --check

screenshots: venv ## re-render docs/console-*.png: latam serve on demo flight data, in headless Chromium
	PYTHONPATH=. $(BIN)/python -m tests.browser.screenshots

diagram: ## re-render docs/architecture.png from scripts/diagram.py
	command -v dot >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends graphviz)
	$(PYTHON) -m venv .venv-docs && .venv-docs/bin/pip install -q -r requirements/docs.txt
	.venv-docs/bin/python scripts/diagram.py

clean: ## remove local data and tool caches
	rm -rf .latam .pytest_cache .mypy_cache .ruff_cache
