# The two README commands are `make run` and `make test`; everything else is a step they use.
# The virtual environment lives in .venv and is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run serve train test lint typecheck format bench bench-service clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Set up, train the default model if the store ($BENTOML_HOME, default ~/bentoml) has none,
## then serve it on port 3000 (CROP_YIELD_* variables configure the service).
run: setup
	$(PY) -m training --if-missing
	$(PY) -m service

## Serve the model the settings name, without training.
serve: setup
	$(PY) -m service

## Train with options, e.g. `make train ARGS="--data my.csv --plots plots/"`.
train: setup
	$(PY) -m training $(ARGS)

## Set up, then lint, type-check and run the whole test suite (what CI runs).
test: setup lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Benchmarks (figures for the issue notes; not tests).
bench: setup
	$(PY) benchmarks/training_bench.py $(ARGS)

bench-service: setup
	$(PY) benchmarks/service_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
