"""Start-up behaviour: a model that cannot be served (missing, unreadable metadata, CUDA asked
for where there is none) stops start-up with one clear line and status 2, whether started by
``python -m service`` or ``bentoml serve``; the CUDA path where there is a GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

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


def edited_store(home: Path, tag: str, change: Callable[[dict[str, Any], Path], None], where: Path) -> Path:
    """A copy of the trained store at ``where`` whose entry ``change`` edited (its metadata,
    and the entry's folder)."""
    shutil.copytree(home / "models", where / "models")
    name, version = tag.split(":")
    model_yaml = where / "models" / name / version / "model.yaml"
    document = yaml.safe_load(model_yaml.read_text())
    change(document["metadata"], model_yaml.parent)
    model_yaml.write_text(yaml.safe_dump(document))
    return where


def future_version(metadata: dict[str, Any], entry: Path) -> None:
    metadata["schema_version"] = 99


def no_training_ranges(metadata: dict[str, Any], entry: Path) -> None:
    del metadata["features"][1]["train_min"]


def truncated_weights(metadata: dict[str, Any], entry: Path) -> None:
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # a copy cut short


BAD_ENTRIES = {
    "unknown schema version": (future_version, ["schema_version 99", "this version reads 1"]),
    "malformed metadata": (
        no_training_ranges,
        ["malformed metadata", "features.1.train_min", "Field required"],
    ),
    "truncated weights": (truncated_weights, ["model.safetensors cannot be read", "not fully covered"]),
}
STARTERS = {
    "python -m service": [sys.executable, "-m", "service"],
    "bentoml serve": [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "service.service:CropYieldService",
        "--port",
        "0",
    ],
}


@pytest.mark.parametrize("entry", list(BAD_ENTRIES))
@pytest.mark.parametrize("starter", list(STARTERS))
def test_an_entry_it_cannot_read_stops_start_up_with_one_line(
    trained_home: tuple[Path, str], tmp_path: Path, entry: str, starter: str
) -> None:
    home, tag = trained_home
    change, fragments = BAD_ENTRIES[entry]
    store = edited_store(home, tag, change, tmp_path / "store")
    env = {
        **os.environ,
        "BENTOML_HOME": str(store),
        "CROP_YIELD_MODEL_TAG": tag,
        "BENTOML_DO_NOT_TRACK": "true",
    }
    result = subprocess.run(
        STARTERS[starter], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: model {tag}")
    for fragment in fragments:
        assert fragment in line, line


def test_cuda_on_a_host_without_it_stops_start_up_with_one_line(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    home, _ = trained_home
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "CROP_YIELD_DEVICE": "cuda",
        "BENTOML_DO_NOT_TRACK": "true",
    }
    for command in STARTERS.values():
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert (
            "error: CROP_YIELD_DEVICE=cuda but no CUDA device is available; use auto or cpu" in result.stderr
        )
