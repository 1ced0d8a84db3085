# The two commands a newcomer needs: `make run` and `make test`.
# Both create or refresh the local virtualenv first, so they work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint fmt typecheck venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: venv ## API + worker on http://127.0.0.1:8000 with the embedded defaults
	LATAM_LOG_FORMAT=$${LATAM_LOG_FORMAT:-console} $(BIN)/latam serve

test: venv ## the whole test suite
	$(BIN)/pytest

lint: venv ## ruff, formatting and strict mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: venv
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .latam .pytest_cache .mypy_cache .ruff_cache
