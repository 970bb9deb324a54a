#!/usr/bin/env bash
# Prepare this machine to build and run the image with podman (idempotent), then prove it.
#
# 1. installs the `container` group of devtools/system-packages.txt where missing (podman,
#    its runtime, pod network and pause process; see that file for why each is there);
# 2. when no python:3.11-slim image is available (no registry is reachable here), builds a
#    local stand-in from Debian bookworm with mmdebstrap, carrying this machine's extra CA
#    certificates so pip inside builds can reach the package index through its proxy;
# 3. smoke check: runs a container on the default (bridge) network and `podman kube play`s a
#    pod, so a missing piece stops here with one line naming it, not deep inside a test.
# docs/containers.md explains why each step is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
BASE_IMAGE=docker.io/library/python:3.11-slim

bash "$here/../../devtools/apt-tools.sh" container
if ! command -v podman >/dev/null 2>&1; then
    echo "the container tests will be skipped (podman is not installed)" >&2
    exit 0  # apt-tools.sh has already failed in CI
fi

fail() {
    echo "podman set-up: $*" >&2
    exit 1
}

if ! podman image exists "$BASE_IMAGE"; then
    if ! podman pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
        echo "building a local stand-in for $BASE_IMAGE (Debian bookworm + python3)" >&2
        tarball="$(mktemp -d)/base.tar"
        certs=(/usr/local/share/ca-certificates/*.crt)
        hooks=(--customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"')
        if [ -e "${certs[0]}" ]; then
            hooks+=(--customize-hook="copy-in ${certs[*]} /usr/local/share/ca-certificates/")
        fi
        hooks+=(--customize-hook='chroot "$1" update-ca-certificates')
        mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
            "${hooks[@]}" bookworm "$tarball" || fail "mmdebstrap could not build the base image"
        podman import --quiet "$tarball" "$BASE_IMAGE" >/dev/null
        rm -rf "$(dirname "$tarball")"
    fi
fi

# -- smoke check ----------------------------------------------------------------------
for tool in iptables; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not on PATH (netavark needs it for the bridge network)"
done
# The first line that says what failed (podman's last line is often only "Error: failed to start").
cause() { grep -m 1 -iE 'error|failed|not found|no such' || echo "(no output)"; }
if ! out="$(podman run --rm --pull=never --network bridge "$BASE_IMAGE" python3 -c 'print("ok")' 2>&1)" \
    || [ "$out" != "ok" ]; then
    fail "a container on the default network did not run: $(cause <<< "$out")"
fi
pod="$(mktemp --suffix=.yaml)"
trap 'podman kube down "$pod" >/dev/null 2>&1 || true; rm -f "$pod"' EXIT
cat > "$pod" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: crop-yield-setup-smoke}
spec:
  restartPolicy: Never
  containers:
    - {name: probe, image: $BASE_IMAGE, command: [/usr/bin/python3, -c, "pass"]}
YAML
podman kube down "$pod" >/dev/null 2>&1 || true
if ! out="$(podman kube play "$pod" 2>&1)"; then
    fail "podman kube play of a one-container pod failed: $(cause <<< "$out")"
fi
echo "podman ready: $(podman --version); base image $BASE_IMAGE; bridge network and kube play work" >&2
