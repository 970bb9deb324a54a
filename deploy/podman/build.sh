#!/usr/bin/env bash
# Build the service image with podman: deploy/podman/build.sh [TAG] [extra podman build args...]
#
# Where this machine keeps a local torch wheel folder (pip's find-links, e.g. /opt/wheels),
# it is mounted into the build so `torch==2.13.0` installs from it instead of the network.
# CUDA=1 builds the CUDA image instead: PyPI's own torch==2.13.0 wheel is the CUDA build (it
# pulls the nvidia-* runtime wheels, a few GB), so neither the CPU index nor the local CPU
# wheel may be used.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
tag="${1:-localhost/crop-yield:dev}"
shift || true

args=(--pull=never --format docker)  # docker format keeps HEALTHCHECK
wheels="${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}"
if [ "${CUDA:-0}" = "1" ]; then
    args+=(--build-arg TORCH_INDEX_URL= --build-arg TORCH_VARIANT=cuda)
elif [ -n "$wheels" ] && [ -d "$wheels" ]; then
    conf="$(mktemp)"
    printf '[global]\nfind-links = %s\n' "$wheels" > "$conf"
    args+=(-v "$wheels:$wheels:ro" -v "$conf:/etc/pip.conf:ro" --build-arg TORCH_INDEX_URL=)
fi
version="$(cd "$root" && python3 -c 'import contract; print(contract.__version__)')"
exec podman build "${args[@]}" --build-arg VERSION="$version" -t "$tag" "$@" "$root"
