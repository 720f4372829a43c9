# The two quick-start commands: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install hashsvc into it first.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-all bench services install audit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,demo]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/hashsvc demo

services:
	bash scripts/ensure-services.sh

# Known vulnerabilities in the installed dependencies (pip-audit): fails on any; says NOT
# AUDITED where no vulnerability service is reachable (HASHSVC_AUDIT_REQUIRED=1 fails then too).
audit: install
	bash scripts/audit.sh

test: install services audit
	$(BIN)/python -m pytest -q

test-all: install services
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-audit .venv-audit.log build *.egg-info
