#!/usr/bin/env bash
# Create one virtual environment per peer model server for the benchmark:
#
#     bash benchmarks/peers/setup_peers.sh [DIR]      # DIR defaults to .peers/ in the repo root
#
#   DIR/kserve      kserve (Python model server, V1 + V2 REST)
#   DIR/torchserve  torchserve + torch-model-archiver (needs `java` on PATH)
#   DIR/pytriton    nvidia-pytriton (Triton Inference Server 2.51's tritonserver binary and
#                   its Python backend stub, in the wheel; runs on CPU)
#
# Each venv also gets the same CPU torch as the project. torch is pinned in the same pip
# command as the peer so pip can never swap it for another (CUDA) build; a dry run first
# refuses any plan that would bring NVIDIA/CUDA wheels (only the two Triton packages that
# are not CUDA, PyTriton itself and Triton's client, are let through by name). A venv that
# already imports its pinned packages is left alone, so running this twice is cheap.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${1:-$ROOT/.peers}"
PYTHON="${PYTHON:-python3.11}"

COMMON=(torch==2.13.0 safetensors==0.8.0)
NUMPY=numpy==2.4.6
KSERVE=(kserve==0.21.0 "$NUMPY")
# torchserve 0.12.0's Python worker imports yaml without declaring PyYAML as a dependency.
TORCHSERVE=(torchserve==0.12.0 torch-model-archiver==0.12.0 PyYAML==6.0.4 "$NUMPY")
# nvidia-pytriton 0.7.0 requires numpy<2 (and pulls tritonclient with grpc/http extras,
# no CUDA wheels): its venv has numpy 1.26.4, the same torch.
PYTRITON=(nvidia-pytriton==0.7.0 numpy==1.26.4)
# Wheels in a plan the dry run lets through although their names say nvidia/triton: PyTriton
# (tritonserver and the Python backend stub, with the CUDA runtime library they link vendored
# in the wheel; they run without a GPU or driver) and Triton's client. Anything else named
# nvidia-*, *cuda* or triton (the kernel compiler a CUDA torch brings) is refused.
ALLOWED='^(nvidia-pytriton|tritonclient)-[0-9]'

mkdir -p "$DIR"
# Keep the venvs out of git without touching the repo's .gitignore.
[ -f "$DIR/.gitignore" ] || echo '*' > "$DIR/.gitignore"

# pip_q VENV ARGS...: run VENV's pip quietly, dropping this machine's noisy
# "Location ... is ignored" warnings about local package mirrors.
pip_q() { local venv="$1"; shift; "$venv/bin/pip" "$@" 2> >(grep -v 'is ignored' >&2); }

# venv_ok VENV CHECK: true if VENV's python runs the import/version check CHECK.
venv_ok() { [ -x "$1/bin/python" ] && "$1/bin/python" -c "$2" >/dev/null 2>&1; }

# make_venv NAME CHECK PACKAGE...: create DIR/NAME with PACKAGE... unless CHECK passes.
make_venv() {
    local name="$1" check="$2"; shift 2
    local venv="$DIR/$name"
    if venv_ok "$venv" "$check"; then
        echo "== $name: $venv already set up, skipping"
    else
        echo "== $name: creating $venv"
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv"
        pip_q "$venv" install --quiet --upgrade pip
        # Dry run first: refuse a plan with any NVIDIA/CUDA wheel (a torch other than the
        # pinned CPU one would bring them); the check after the install asserts 2.13.0+cpu.
        local plan
        plan="$(pip_q "$venv" install --dry-run "$@" "${COMMON[@]}" | grep '^Would install' || true)"
        if [ -z "$plan" ]; then
            echo "!! $name: pip's dry run gave no plan" >&2
            exit 1
        fi
        # One wheel a line, the allowed ones dropped, then the CUDA names refused.
        if echo "${plan#Would install }" | tr ' ' '\n' | grep -viE "$ALLOWED" | grep -qiE 'nvidia|cuda|triton'; then
            echo "!! $name: pip would install CUDA packages, not installing:" >&2
            echo "$plan" >&2
            exit 1
        fi
        pip_q "$venv" install --quiet "$@" "${COMMON[@]}"
        venv_ok "$venv" "$check" || { echo "!! $name: check failed: $check" >&2; exit 1; }
    fi
    echo "   installed:"
    "$venv/bin/pip" freeze | grep -iE '^(kserve|torchserve|torch-model-archiver|nvidia-pytriton|tritonclient|torch|safetensors|numpy|fastapi|uvicorn|pyyaml)==' \
        | sed 's/^/     /'
}

# Each check imports the packages and asserts the pinned versions (and the CPU torch).
TORCH_OK="from importlib.metadata import version as v; import torch, safetensors, numpy
assert torch.__version__ == '2.13.0+cpu', torch.__version__"
make_venv kserve "$TORCH_OK
import kserve; assert v('kserve') == '0.21.0'" "${KSERVE[@]}"
make_venv torchserve "$TORCH_OK
import ts.model_service_worker, ts.torch_handler.base_handler, model_archiver, yaml; assert v('torchserve') == v('torch-model-archiver') == '0.12.0'" "${TORCHSERVE[@]}"
make_venv pytriton "$TORCH_OK
import pytriton.triton, pytriton.decorators; assert v('nvidia-pytriton') == '0.7.0'
assert numpy.__version__ == '1.26.4', numpy.__version__" "${PYTRITON[@]}"

if command -v java >/dev/null 2>&1; then
    echo "== java: $(java -version 2>&1 | head -n 1)"
else
    echo "!! java not found on PATH: TorchServe needs Java 11+ (Debian: apt-get install default-jre-headless)" >&2
fi
