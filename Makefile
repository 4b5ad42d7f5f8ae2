# The two commands a user needs are `make run` and `make test`; the rest are their parts.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHON := $(CURDIR)/$(PY)

.PHONY: help venv browser up run down test test-unit test-integration lint bench bench-scale bench-scaleout bench-smoke probe-faust faults faults-reduced conformance clean

help:
	@echo "make run    set up everything and start the whole service (prints URLs and a dev API key)"
	@echo "make test   set up everything and run lint and every test"
	@echo "make down   stop everything started by make run / make test"
	@echo "make lint   ruff + mypy"
	@echo "make bench  measure every figure beside its ceiling (docs/benchmarks.md, ~20 min)"
	@echo "make bench-scale  one 10,000,000-recipient message end to end (docs/scale.md; not in CI)"
	@echo "make bench-scaleout  one delivery worker against two on 200,000 sends (docs/scale.md)"
	@echo "make probe-faust  the faust-streaming exactly-once probe (docs/faust-findings.md)"
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

# Every test is in `make test`. The schemathesis run (tests/integration/test_api_conformance.py,
# a bounded run) and the reduced fault matrix (tests/integration/test_faults.py, its views check
# limited to its own messages) also run alone: `make conformance`, `make faults-reduced`.

test: lint up browser
	@bash scripts/with_env.sh $(PY) -m pytest tests --durations=25
	@$(MAKE) --no-print-directory bench-smoke

# Every figure of docs/benchmarks.md: bench/results/latest.json (+ a dated copy), latest.png, the table.
bench: up
	@bash scripts/with_env.sh $(PY) -m bench

# The scale case (issue 15): one message of 10,000,000 recipients end to end on the real stack
# (intake, release, a SIGKILL and restart from a snapshot, peak memory, the projections' catch-up,
# the recipients pages) and the delivery scale-out on 200,000 sends: not in CI, needs ~6 GB of
# RAM; figures in bench/results/scale-latest.json (docs/scale.md). SCALE_RECIPIENTS=N for others,
# SCALE_DELIVERY_SLICE=S for another slice (0: no scale-out).
bench-scale: up
	@bash scripts/with_env.sh $(PY) -m bench.bench_scale --recipients $${SCALE_RECIPIENTS:-10000000} \
		--delivery-slice $${SCALE_DELIVERY_SLICE:-200000}

# The delivery scale-out alone (one worker, then two, 200,000 sends each; ~10 min, so not in
# `make bench`): the "scaleout" section of bench/results/scale-latest.json.
bench-scaleout: up
	@bash scripts/with_env.sh $(PY) -m bench.bench_scaleout --sends $${SCALE_DELIVERY_SLICE:-200000}

# The same code at a few thousand recipients, every figure once, into .state/bench-smoke (part of
# `make test`, so the benchmarks keep working; it asserts no time).
bench-smoke: up
	@BENCH_QUICK=1 BENCH_OUT=$(CURDIR)/.state/bench-smoke BENCH_DOCS= \
		bash scripts/with_env.sh $(PY) -m bench > $(CURDIR)/.state/bench-smoke.log 2>&1 \
		|| { tail -n 60 $(CURDIR)/.state/bench-smoke.log; exit 1; }
	@bash scripts/with_env.sh $(PY) -m bench.bench_scale --recipients 30000 --pages 20 \
		--delivery-slice 2000 --out $(CURDIR)/.state/bench-smoke >> $(CURDIR)/.state/bench-smoke.log 2>&1 \
		|| { tail -n 60 $(CURDIR)/.state/bench-smoke.log; exit 1; }
	@echo "bench-smoke: every figure measured (log .state/bench-smoke.log)"

# The evidence of docs/faust-findings.md; not part of `make test` (installs the `faust` extra).
probe-faust: up
	@bash scripts/faust_probe.sh

# The fault matrix (docs/reliability.md): faults/results/latest.json and the table in the doc.
faults: up
	@bash scripts/with_env.sh $(PY) -m faults $(FAULTS_ARGS)

# The schemathesis run alone (it is part of `make test`).
conformance: up
	@bash scripts/with_env.sh $(PY) -m pytest tests/integration/test_api_conformance.py

# The reduced fault matrix alone (it is part of `make test`).
faults-reduced: up
	@bash scripts/with_env.sh $(PY) -m pytest tests/integration/test_faults.py

clean: down
	rm -rf .state
