"""The CUDA image (PyPI's CUDA build of torch 2.13.0, `make image-cuda`), on this CPU-only
host: device ``auto`` falls back to the CPU and serves correct predictions, and
``CROP_YIELD_DEVICE=cuda`` stops start-up with one clear line. Marked ``cuda_image``; the
build downloads a few GB (about 3 minutes here), so ``-m "not cuda_image"`` leaves it out."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import torch

from tests.container.conftest import build_image, podman
from tests.container.test_image import run_container

pytestmark = pytest.mark.cuda_image
CUDA_IMAGE = "localhost/crop-yield:test-cuda"


@pytest.fixture(scope="module")
def cuda_image() -> str:
    return build_image(CUDA_IMAGE, CUDA="1")


@pytest.fixture(scope="module")
def served_cuda(cuda_image: str) -> Iterator[str]:
    name = "crop-yield-cuda-test"
    yield run_container(cuda_image, name)
    podman("rm", "--force", name, check=False)


def test_the_image_carries_the_cuda_build_of_torch(cuda_image: str) -> None:
    probe = "import torch; print(torch.__version__, torch.version.cuda)"
    result = podman("run", "--rm", "--entrypoint", "python3", cuda_image, "-c", probe, check=False)
    version, cuda = result.stdout.split()
    assert version.startswith("2.13.0+cu")
    assert cuda != "None"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback on a host without CUDA")
def test_auto_serves_on_the_cpu(served_cuda: str) -> None:
    assert httpx.get(f"{served_cuda}/metadata").json()["device"] == "cpu"
    response = httpx.post(
        f"{served_cuda}/predict", json={"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
    )
    prediction = response.json()["predictions"][0]
    assert prediction["apples"] == pytest.approx(53.80, abs=0.05)
    assert prediction["oranges"] == pytest.approx(66.81, abs=0.05)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without CUDA")
def test_cuda_without_a_gpu_stops_with_one_line(cuda_image: str) -> None:
    result = podman("run", "--rm", "-e", "CROP_YIELD_DEVICE=cuda", cuda_image, check=False, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "error: CROP_YIELD_DEVICE=cuda but no CUDA device is available; use auto or cpu" in output
