#!/usr/bin/env bash
# Prepare this machine to build and run the image with podman (idempotent).
#
# - installs what podman build and `podman kube play` need from Debian, where missing:
#   podman itself, runc (the runtime containers.conf names), catatonit (the pause process of
#   kube play's pods; a podman installed without recommended packages lacks it), conmon,
#   netavark and aardvark-dns (pod networking), slirp4netns, uidmap, and mmdebstrap for the
#   base image below (needs root and apt-get; elsewhere it says what is missing and exits 1);
# - when no python:3.11-slim image is available (no registry is reachable here), builds a
#   local stand-in from Debian bookworm with mmdebstrap, carrying this machine's extra CA
#   certificates so pip inside builds can reach the package index through its proxy.
# docs/containers.md explains why each step is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
BASE_IMAGE=docker.io/library/python:3.11-slim
PACKAGES=(podman runc catatonit conmon netavark aardvark-dns slirp4netns uidmap mmdebstrap)

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "missing for the container tests: ${missing[*]} (installing needs root and apt-get)" >&2
        if [ -n "${CI:-}" ]; then
            exit 1
        fi
        echo "the container tests will be skipped" >&2
        exit 0
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true  # a stale list still resolves these packages
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! podman image exists "$BASE_IMAGE"; then
    if podman pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
        exit 0
    fi
    echo "building a local stand-in for $BASE_IMAGE (Debian bookworm + python3)" >&2
    command -v mmdebstrap >/dev/null || apt-get install -y -qq mmdebstrap >/dev/null
    tarball="$(mktemp -d)/base.tar"
    certs=(/usr/local/share/ca-certificates/*.crt)
    hooks=(--customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"')
    if [ -e "${certs[0]}" ]; then
        hooks+=(--customize-hook="copy-in ${certs[*]} /usr/local/share/ca-certificates/")
    fi
    hooks+=(--customize-hook='chroot "$1" update-ca-certificates')
    mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        "${hooks[@]}" bookworm "$tarball"
    podman import --quiet "$tarball" "$BASE_IMAGE" >/dev/null
    rm -rf "$(dirname "$tarball")"
fi
echo "podman ready: $(podman --version); base image $BASE_IMAGE present" >&2
