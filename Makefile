# The two README commands are `make run` and `make test`; everything else is a step they use.
# The virtual environment lives in .venv and is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run train test lint typecheck format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Set up, then train the default model into the BentoML model store ($BENTOML_HOME, default ~/bentoml).
run: setup
	$(PY) -m training $(ARGS)

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

## Training benchmark (figures for the README and issue notes; not a test).
bench: setup
	$(PY) benchmarks/training_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
