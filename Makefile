# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.keel-base
TEST_STAMP := $(VENV)/.keel-test
ARGS ?=

.PHONY: demo test lint typecheck unit services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Byte-compiling our own sources up front keeps a worker's start well under
# a second even where the environment sets PYTHONDONTWRITEBYTECODE.
$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q src
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m compileall -q src
	touch $@ $(BASE_STAMP)

## Install Keel into .venv and start the gateway on the simulator (Ctrl-C stops it).
demo: $(BASE_STAMP)
	$(BIN)/keel serve -c examples/quickstart/keel.yaml --demo $(ARGS)

## Lint, type-check and run the whole test suite.
test: $(TEST_STAMP) services lint typecheck
	$(BIN)/pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

services:
	@scripts/ensure-services.sh

bench: $(TEST_STAMP)
	$(BIN)/python bench/overhead.py $(ARGS)

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache
