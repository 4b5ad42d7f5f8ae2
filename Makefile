# The two commands a user needs are `make run` and `make test`; the rest are their parts.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHON := $(CURDIR)/$(PY)

.PHONY: help venv browser up run down test test-unit test-integration lint bench faults clean

help:
	@echo "make run    set up everything and start the whole service (prints URLs and a dev API key)"
	@echo "make test   set up everything and run lint and every test"
	@echo "make down   stop everything started by make run / make test"
	@echo "make lint   ruff + mypy"
	@echo "make bench  measure the figures reported in docs/"
	@echo "make faults the fault matrix on the real stack (docs/reliability.md)"

venv:
	@bash scripts/venv.sh

# Debian's chromium for the web UI's browser tests (tests/integration/ui).
browser:
	@bash scripts/browser.sh

up: venv
	@bash scripts/up.sh

run: up
	@bash scripts/services.sh start
	@bash scripts/run_banner.sh

down:
	@bash scripts/down.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test-unit: venv
	$(PY) -m pytest tests --ignore=tests/integration

test-integration: up browser
	@bash scripts/with_env.sh $(PY) -m pytest tests/integration

test: lint up browser
	@bash scripts/with_env.sh $(PY) -m pytest tests

bench: up
	@bash scripts/with_env.sh $(PY) -m bench

# The fault matrix (docs/reliability.md): faults/results/latest.json and the table in the doc.
faults: up
	@bash scripts/with_env.sh $(PY) -m faults $(FAULTS_ARGS)

clean: down
	rm -rf .state
