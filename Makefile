# One venv, made from pyproject.toml; every target installs what it needs first.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist): most slow tests wait on the servers and workers they start,
# so two share a 2-core machine well. Tests marked `serial` (memory caps, four workers,
# deadlines: under a second test process they flaked) run alone afterwards.
TEST_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-fast test-slow lint demo serve bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)  ## the whole suite: unit, real DB, real training, real servers
	$(PYTEST) -n $(TEST_JOBS) -m "not serial"
	$(PYTEST) -m serial

test-fast: $(STAMP)  ## no training, no servers: the edit loop
	$(PYTEST) -n $(TEST_JOBS) -m "not slow"

test-slow: $(STAMP)  ## only what trains or starts servers
	$(PYTEST) -n $(TEST_JOBS) -m "slow and not serial"
	$(PYTEST) -m "slow and serial"

lint: $(STAMP)  ## ruff's rules and formatting, mypy --strict (set in pyproject's [tool.mypy])
	$(BIN)/ruff check search service tests benchmarks
	$(BIN)/ruff format --check search service tests benchmarks
	$(BIN)/mypy search service

demo: $(STAMP)  ## start the embedded service, run a real study on digits, print the best schedule
	$(BIN)/python -m service.demo

serve: $(STAMP)
	$(BIN)/lrsearch serve --workers 2

bench: $(STAMP)
	$(BIN)/python benchmarks/trial_overhead.py

clean:
	rm -rf $(VENV) var .pytest_cache
