#!/usr/bin/env bash
# The test run of `make test`: devtools/test-tiers.sh PYTHON [PYTEST ARGS...]
#
# The container tier (image builds and the CUDA image's downloads: mostly waiting on the
# network and on podman) runs in the background while the other tiers (unit, deploy,
# integration: mostly CPU) run in the foreground, each under coverage. A fresh machine
# spends about 8 minutes in each; side by side they take about as long as the longer one.
# The container tier's output is kept in test-results/container-tier.log and printed at the end.
set -uo pipefail
python=$1
shift
mkdir -p test-results
log=test-results/container-tier.log
"$python" -m coverage run -m pytest -m container --junitxml=test-results/junit-container.xml "$@" \
    > "$log" 2>&1 &
container=$!
trap 'kill "$container" 2>/dev/null' INT TERM
"$python" -m coverage run -m pytest -m "not container" --junitxml=test-results/junit.xml "$@"
others=$?
echo "== container tier (started beside the others; log: $log)"
wait "$container"
containers=$?
cat "$log"
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }  # 5: the arguments selected no test of that tier
passed "$others" && passed "$containers"
