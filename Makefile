# crlib developer commands. Every target that runs code first makes sure .venv is up to date.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.crlib-installed

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: setup demo test test-fast lint bench bench-gpu airflow cluster clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch goes first, pinned, so no other
# requirement can pull the multi-GB CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (crlib targets Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# pytest-xdist workers for `make test`: each test file runs whole on one worker (module fixtures
# are built once; files with slow tests go first, tests/conftest.py); every worker starts its own
# PostgreSQL and Airflow home. On a 2-core machine: 20.9 min of tests (23.7 before the slow files
# went first), against 25.0-26.2 min in one process on another 2-core machine. 0 runs everything
# in one process. More workers need memory: full-size tests take ~3 GB each.
TEST_WORKERS ?= 2

demo: setup
	$(VENV)/bin/crlib demo

test: setup
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: setup
	$(VENV)/bin/ruff check crlib tests dags plugins
	$(VENV)/bin/ruff format --check crlib tests dags plugins
	$(VENV)/bin/mypy

# Every benchmark, each printing ratios against the reference tools measured in the same run
# (slow: full-size visits; run on a quiet machine). `crlib bench --help` lists them.
BENCHES := screen infer truth db dag accuracy train cluster warm-workers pipeline
bench: setup
	set -e; for b in $(BENCHES); do echo "== crlib bench $$b"; $(VENV)/bin/crlib bench $$b; done

# GPU path (issue #16 item 5): engine inference per precision on a full simulated exposure, masks
# against CPU fp32, training patches/s, the targets; one JSON report on stdout and in
# .crlib/bench-gpu.json (~8 min on an H200; without a GPU a CPU plumbing check). Extra options:
# make bench-gpu BENCH_GPU_ARGS="--flc FILE --repeats 10".
BENCH_GPU_ARGS ?=
bench-gpu: setup
	$(VENV)/bin/crlib bench gpu --out .crlib/bench-gpu.json $(BENCH_GPU_ARGS)

clean:
	rm -rf .crlib build *.egg-info

# Airflow UI + scheduler on 127.0.0.1 with crlib's DAGs (state under .crlib/airflow). The pools the
# DAGs use are created first: the scheduler never starts a task whose pool does not exist.
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/.crlib/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__API__HOST=127.0.0.1 PYTHONPATH=$(CURDIR)/plugins PATH=$(CURDIR)/$(VENV)/bin:$$PATH
airflow: setup
	$(AIRFLOW_ENV) $(VENV)/bin/airflow db migrate
	$(AIRFLOW_ENV) $(VENV)/bin/airflow pools set crlib_inference 2 "deepCR inference (crlib)"
	$(AIRFLOW_ENV) $(VENV)/bin/airflow pools set crlib_mast 4 "MAST queries and downloads (crlib)"
	$(AIRFLOW_ENV) $(VENV)/bin/airflow standalone

# Airflow on the CeleryExecutor until Ctrl-C: PostgreSQL metadata (embedded, or CRLIB_DATABASE_URL's
# server), a private redis-server, api-server on 127.0.0.1:8080, scheduler, dag-processor, triggerer
# and Celery workers on queues cpu and gpu (process logs in .crlib/airflow-cluster/logs/cluster).
cluster: setup
	$(VENV)/bin/crlib cluster
