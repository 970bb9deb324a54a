"""Start-up behaviour: a missing model stops the service with one clear message; CUDA path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from tests.helpers import REPO_ROOT
from tests.integration.conftest import start_service, stop_service

pytestmark = pytest.mark.integration


def test_missing_model_tag_stops_start_up(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "CROP_YIELD_MODEL_TAG": "crop_yield:nosuchversion"}
    result = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: model crop_yield:nosuchversion is not in the model store {tmp_path}; "
        "train one with `python -m training` or set CROP_YIELD_MODEL_TAG"
    )


def test_serves_a_pinned_tag_with_batching_off(trained_home: tuple[Path, str], tmp_path: Path) -> None:
    home, tag = trained_home
    process, url = start_service(home, tmp_path / "log", model_tag=tag, batching="false")
    try:
        response = httpx.post(
            f"{url}/predict", json={"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
        )
        assert response.status_code == 200
        assert response.json()["model"] == tag
    finally:
        assert stop_service(process) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device(trained_home: tuple[Path, str], tmp_path: Path) -> None:
    home, _ = trained_home
    process, url = start_service(home, tmp_path / "log", device="cuda")
    try:
        assert httpx.get(f"{url}/metadata").json()["device"].startswith("cuda")
        response = httpx.post(
            f"{url}/predict", json={"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
        )
        assert response.json()["predictions"][0]["apples"] == pytest.approx(53.80, abs=0.05)
    finally:
        stop_service(process)
