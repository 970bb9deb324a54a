#!/usr/bin/env bash
# Install Prometheus and promtool (Debian's `prometheus` package) for the monitoring tests,
# when missing (idempotent; needs root and apt-get, otherwise it says so and the tests skip,
# except in CI where they must run).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus/promtool are not installed and cannot be installed here (needs root and apt-get)" >&2
    [ -n "${CI:-}" ] && exit 1
    exit 0
fi
echo "installing prometheus (for promtool and the scrape test)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
