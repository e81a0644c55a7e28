# The README's two commands: `make run` (the main job) and `make test` (the suite).
# Both create .venv if missing and install the project; the install is skipped while
# pyproject.toml is unchanged (the stamp below is keyed to it).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

# Offline switches for every run and test (the project never needs the network at run time).
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# DVC stages call `python`: make it the venv's.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run study test lint arch bench gpu-check ui mlflow-ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@sha256sum pyproject.toml > $(STAMP)

# The main job: the embedded default pipeline, one MLflow parent run around `dvc repro`.
run: $(STAMP)
	$(BIN)/python -m pipelines.repro

# A preset (presets/<name>.yaml) as a DVC experiment in a private copy of the workspace; its report
# lands in docs/<name>/ (make study: presets/study.yaml, <= 120 min on 2 cores). PRESET=gpu on GPUs.
PRESET ?= study
study: $(STAMP)
	$(BIN)/python -m pipelines.flow --preset $(PRESET)

# Two workers, each taking whole test files (module fixtures stay in one process): the suite spends
# half its time in single-threaded subprocess and server start-ups, so 2 workers on 2 cores run it
# in ~0.7x the time. They take the files longest first (tests/conftest.py: HEAVY_FILES), not in
# xdist's order by test count. PYTEST_ARGS="-n 0" runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check flanmoe stages pipelines tests bench tools

# docs/architecture.md's drawings, rewritten between their markers: the stage graph (dvc dag --md) and
# the import graph (tools/import_graph.py). `python tools/import_graph.py --check` checks the layering.
arch: $(STAMP)
	$(BIN)/dvc dag --md | $(BIN)/python tools/import_graph.py --update docs/architecture.md --dvc-dag -

# Benchmarks need the bench extra (transformers) for the Hugging Face comparisons.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/tokenize.py
	$(BIN)/python bench/moe_layer.py
	$(BIN)/python bench/train_step.py --quick
	$(BIN)/python bench/train_throughput.py --quick
	$(BIN)/python bench/eval_throughput.py --quick
	$(BIN)/python bench/mlflow_writers.py
	$(BIN)/python bench/stage_overhead.py --baseline HEAD --repeats 1

# The GPU path measured in one command (bench/gpu_check.py; bench/README.md says how to run it on a
# rented GPU): the machine's own python3, no venv setup (a bare GPU box has no package registry; pydantic
# comes from bench/wheels/). Results: bench/results/gpu-check-<device>.json. On CPU, at micro size:
# make gpu-check ARGS="--device cpu --quick"
gpu-check:
	$(PYTHON) bench/gpu_check.py $(ARGS)

# The Prefect UI (the pipeline served as deployment flan-moe/pipeline: its form starts runs) and the
# MLflow UI on the project's store, both on 127.0.0.1; Ctrl-C stops all of it (pipelines/ui.py).
PREFECT_PORT ?= 4200
ui: $(STAMP)
	PREFECT_PORT=$(PREFECT_PORT) MLFLOW_PORT=$(MLFLOW_PORT) $(BIN)/python -m pipelines.ui

# Only the MLflow UI on the local store, bound to 127.0.0.1 (Ctrl-C stops it and its worker).
MLFLOW_PORT ?= 5000
mlflow-ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

clean:
	rm -rf data/prepared data/tokenized metrics models plots checkpoints
