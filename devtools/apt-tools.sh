#!/usr/bin/env bash
# Install one group of devtools/system-packages.txt where any of it is missing (idempotent):
#   apt-tools.sh GROUP          install the group's Debian packages
#   apt-tools.sh --list GROUP   print them
# Needs root and apt-get; without them it names what is missing and exits 0 (the tests that
# need it skip), except in CI ($CI set), where the tests must run and this exits 1.
set -euo pipefail
list="$(cd "$(dirname "$0")" && pwd)/system-packages.txt"
packages_of() {
    local found
    found="$(sed -n "s/^$1:[[:space:]]*//p" "$list")"
    [ -n "$found" ] || { echo "apt-tools.sh: no group '$1' in $list" >&2; exit 2; }
    echo "$found"
}
if [ "${1:-}" = "--list" ]; then
    packages_of "$2"
    exit 0
fi
group=$1
names="$(packages_of "$group")" || exit 2
read -r -a packages <<< "$names"
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing for the $group tier: ${missing[*]} (installing needs root and apt-get)" >&2
    [ -n "${CI:-}" ] && exit 1
    exit 0
fi
echo "installing for the $group tier: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true  # a stale package list still resolves these
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
