# The two quick-start commands: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install hashsvc into it first.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-all bench services install clean

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

test: install services
	$(BIN)/python -m pytest -q

test-all: install services
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
