# gatekeeper: `make run` shows the demo, `make test` runs every check. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration bench system-deps test-deps clean

$(STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "gatekeeper needs Python 3.11 or newer (found: $(PYTHON))"; exit 1; fi
	@if [ ! -x $(BIN)/python ]; then \
		$(PYTHON) -m venv $(VENV) || { scripts/system-deps.sh python3-venv && $(PYTHON) -m venv $(VENV); }; fi
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# What `make run` needs, and what the tests need on top (real services, a real browser).
RUN_DEPS := redis-server
TEST_DEPS := redis-server postgresql prometheus chromium systemd

system-deps:
	@scripts/system-deps.sh $(RUN_DEPS)

test-deps:
	@scripts/system-deps.sh $(TEST_DEPS)

run: $(STAMP) system-deps
	$(BIN)/gatekeeper demo

lint: $(STAMP)
	$(BIN)/ruff check gatekeeper tests bench
	$(BIN)/ruff format --check gatekeeper tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) test-deps
	$(BIN)/pytest -q tests/integration

test: $(STAMP) test-deps lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
