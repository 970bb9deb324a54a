#!/usr/bin/env bash
# Install Prometheus and promtool (Debian's `prometheus` package) for the monitoring tests.
exec bash "$(dirname "$0")/../../devtools/apt-tools.sh" "for promtool and the scrape test" \
    "prometheus promtool" prometheus
