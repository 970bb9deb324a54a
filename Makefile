# The two README commands are `make run` and `make test`; everything else is a step they use.
# The virtual environment lives in .venv; dependencies are reinstalled when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup container-setup monitoring-setup browser-setup prometheus-rule image image-cuda run serve train test lint typecheck format grpc-stubs bench bench-service bench-bursts bench-slow-bodies bench-peers bench-monitoring bench-versions bench-observability bench-intervals loadtest soak clean docs docs-serve

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

## Set up (including podman, prometheus and chromium for their tests), then lint, type-check
## and run the whole test suite: unit, integration, deploy and container tiers (what CI
## runs; the container tier beside the others, see devtools/test-tiers.sh). Results
## (junit*.xml, the container tier's log) and the docs page's screenshots go to
## test-results/; coverage of the packages (served subprocesses included) is printed and
## held to fail_under.
test: setup container-setup monitoring-setup browser-setup lint typecheck docs
	$(PY) -m coverage erase
	bash devtools/test-tiers.sh $(PY) $(PYTEST_ARGS)
	$(PY) -m coverage combine --quiet
	$(PY) -m coverage report

## podman and a python:3.11-slim base image (a local stand-in where no registry is reachable).
container-setup:
	bash deploy/podman/setup.sh

## Prometheus and promtool (Debian package) for the monitoring tests.
monitoring-setup:
	bash deploy/monitoring/setup.sh

## Chromium and chromedriver (Debian packages) for the docs-page browser test.
browser-setup:
	bash devtools/browser-setup.sh

## Build the CPU image: make image TAG=crop-yield:0.1.0
image: container-setup
	bash deploy/podman/build.sh $(or $(TAG),localhost/crop-yield:dev)

## Build the CUDA image (PyPI's CUDA build of torch; downloads a few GB):
## make image-cuda TAG=crop-yield:0.1.0-cuda
image-cuda: container-setup
	CUDA=1 bash deploy/podman/build.sh $(or $(TAG),localhost/crop-yield:dev-cuda)

## The PrometheusRule of the monitoring component, from deploy/monitoring/rules.yml.
prometheus-rule: setup
	$(PY) deploy/monitoring/prometheusrule.py > deploy/kubernetes/components/monitoring/prometheusrule.yaml

## The documentation site into site/ (strict: a broken link, a missing anchor or a page left
## out of mkdocs.yml's navigation fails); open site/index.html, it works offline.
docs: setup
	$(PY) -m devtools.settings_page --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

## Preview the site on http://localhost:8000, rebuilt on every edit.
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

typecheck: setup
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Benchmarks (figures for the issue notes; not tests).
bench: setup
	$(PY) -m benchmarks.training_bench $(ARGS)

## The gRPC stubs, from service/grpc/inference.proto (tests/unit/service/test_grpc.py checks they are current).
grpc-stubs: setup
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. service/grpc/inference.proto

bench-bursts: setup
	$(PY) -m benchmarks.burst_bench $(ARGS)

bench-slow-bodies: setup
	$(PY) -m benchmarks.slow_bodies_bench $(ARGS)

bench-service: setup
	bash devtools/apt-tools.sh benchmark
	$(PY) -m benchmarks.service_bench $(ARGS)

## Interval and extrapolation-flag costs; BEFORE=<checkout of older code> adds it.
bench-intervals: setup
	bash devtools/apt-tools.sh benchmark
	$(PY) -m benchmarks.interval_bench $(if $(BEFORE),--before $(BEFORE)) $(ARGS)

## Single-row requests side by side with KServe 0.21, TorchServe 0.12 and Triton 2.51 via PyTriton 0.7
## (their venvs in .peers/).
bench-peers: setup
	bash devtools/apt-tools.sh benchmark
	bash benchmarks/peers/setup_peers.sh
	$(PY) -m benchmarks.peers_bench $(ARGS)

bench-monitoring: setup
	bash devtools/apt-tools.sh benchmark
	$(PY) -m benchmarks.monitoring_bench $(ARGS)

## Several versions served: a served-set swap under load (ARGS="--part throughput" for one and
## two versions against each other; BEFORE=<checkout of older code> adds it as the baseline).
bench-versions: setup
	bash devtools/apt-tools.sh benchmark
	$(PY) -m benchmarks.versions_bench $(if $(BEFORE),--before $(BEFORE)) $(ARGS)

## Drift counting, payload logging and tracing on, against an older checkout:
## make bench-observability BEFORE=/path/to/checkout (git worktree add /tmp/before <commit>)
bench-observability: setup
	bash devtools/apt-tools.sh benchmark
	$(PY) -m benchmarks.observability_bench --before $(BEFORE) $(ARGS)

## Headless locust run against a running service; HTML report and CSV stats in REPORT_DIR.
## make loadtest HOST=http://localhost:3000 USERS=50 DURATION=2m
REPORT_DIR ?= reports/loadtest
loadtest: setup
	mkdir -p $(REPORT_DIR)
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless --only-summary \
		--host $(or $(HOST),http://localhost:3000) -u $(or $(USERS),50) -r 10 -t $(or $(DURATION),2m) \
		--html $(REPORT_DIR)/report.html --csv $(REPORT_DIR)/stats $(ARGS)

## Soak: serve, run 50 users for 5 minutes, report failures and worker memory growth.
soak: setup
	$(PY) -m loadtest.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build site *.egg-info
