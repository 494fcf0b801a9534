# codenn-convert: `make parity` (main job) and `make test` both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup parity report-all test test-fast lint bench clean

setup: $(STAMP)

# torch 2.13.0 first: it is the CPU wheel on disk; a resolver left alone pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# PARITY_ARGS adds report options, e.g. PARITY_ARGS="--runtimes torch,keras,onnx-torch,onnx-keras,tflite"
PARITY_ARGS ?=

parity: setup  ## the main job: default models, all six runtime pairs, reports/
	$(VENV)/bin/codenn report -o reports $(PARITY_ARGS)

report-all: setup  ## every registered variant
	$(VENV)/bin/codenn report --all -o reports/all

test: setup  ## the whole suite, full-size parity included
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

test-fast: setup  ## unit tests only
	$(VENV)/bin/pytest -q -m "not parity"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
