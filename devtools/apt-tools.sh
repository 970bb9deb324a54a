#!/usr/bin/env bash
# Install Debian packages for a test tier when their commands are missing (idempotent).
#   apt-tools.sh "<what they are for>" "<command> ..." <package> ...
# Needs root and apt-get; without them it says so and exits 0 (the tests skip), except in
# CI ($CI set), where the tests must run and this fails.
set -euo pipefail
purpose=$1 commands=$2
shift 2
missing=0
for command in $commands; do
    command -v "$command" >/dev/null 2>&1 || missing=1
done
[ "$missing" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "$commands: not installed and cannot be installed here (needs root and apt-get)" >&2
    [ -n "${CI:-}" ] && exit 1
    exit 0
fi
echo "installing $* ($purpose)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
