# gatekeeper: `make run` shows the demo, `make test` runs every check. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
STAMP := $(VENV)/.installed

.PHONY: run test test-any-hour lint typecheck unit integration bench system-deps test-deps clean

# The virtual environment, with a current pip.
$(BIN)/python:
	@if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "gatekeeper needs Python 3.11 or newer (found: $(PYTHON))"; exit 1; fi
	$(PYTHON) -m venv $(VENV) || { scripts/system-deps.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip

# What `make run` needs: gatekeeper, its runtime dependencies and the `fast` extra (uvloop).
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[fast]'
	@touch $@

# What `make test` needs on top: the `dev` extra (pytest, mypy, ruff, Playwright, Schemathesis, ...).
# pip installs only what is missing; both stamps are redone when pyproject.toml changes.
$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# What `make run` needs, and what the tests need on top (real services, a real browser).
RUN_DEPS := redis-server
TEST_DEPS := redis-server postgresql prometheus chromium systemd

system-deps:
	@scripts/system-deps.sh $(RUN_DEPS)

test-deps:
	@scripts/system-deps.sh $(TEST_DEPS)

run: $(RUN_STAMP) system-deps
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

# The suite again with the clock of every Python process moved to a Sunday night and to Christmas
# afternoon (scripts/at-time): no test may depend on when it runs. CI runs this after `make test`.
test-any-hour: $(STAMP) test-deps
	scripts/at-time '2026-12-06 03:00 Europe/Amsterdam' $(BIN)/pytest -q -p no:cacheprovider
	scripts/at-time '2026-12-25 14:00 Europe/Amsterdam' $(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis .demo
