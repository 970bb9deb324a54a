#!/usr/bin/env bash
# Install Prometheus and promtool (the `monitoring` group of devtools/system-packages.txt)
# for the rule unit tests and the scrape test, then check that both run.
set -euo pipefail
bash "$(dirname "$0")/../../devtools/apt-tools.sh" monitoring
command -v promtool >/dev/null 2>&1 || exit 0  # not installable here: apt-tools.sh said so
for tool in prometheus promtool; do
    "$tool" --version >/dev/null 2>&1 || { echo "monitoring set-up: '$tool --version' fails" >&2; exit 1; }
done
echo "monitoring ready: $(promtool --version 2>&1 | head -n 1)" >&2
