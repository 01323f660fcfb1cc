# One entry point for humans and CI. `make test` needs nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck pytest install clean run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

.PHONY: run bench bench-durability bench-locust
run: $(STAMP)
	$(BIN)/slotkeeper run

# The full benchmark (minutes): starts its own service, writes docs/perf.md.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)); } || echo "wrk not installed: using bench/pyload.py"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The durable confirm's and WAIT's cost only (docs/perf.md): hold-spread, hold-confirm,
# then hold-spread on a private primary + replica with and without WAIT.
bench-durability: $(STAMP)
	$(BIN)/python bench/durability.py $(BENCH_ARGS)
	$(BIN)/python bench/durability.py --wait $(BENCH_ARGS)

# locust against a running service (`make run` in another terminal): seeds USERS bench
# users and the bench slots into it, then a headless sale; ends with a table of failures.
HOST ?= http://127.0.0.1:8000
USERS ?= 100
RUN_TIME ?= 30s
bench-locust: $(STAMP)
	$(BIN)/slotkeeper seed --bench-users $(USERS)
	BENCH_USERS=$(USERS) $(BIN)/locust -f bench/locustfile.py --headless --users $(USERS) \
		--spawn-rate 10 --run-time $(RUN_TIME) --host $(HOST) --only-summary
