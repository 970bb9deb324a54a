"""Device resolution and the Settings object.

No test depends on the host: each sees a fake root without NVIDIA device nodes
(``device.DEVICE_ROOT``), a torch without CUDA and no ``CROP_YIELD_*`` variables unless it
sets up otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from service.inference import device
from service.inference.device import DeviceUnavailableError, resolve_device, wants_gpu
from service.settings import Settings


@pytest.fixture(autouse=True)
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake root the node lookup sees (no /dev/nvidia* until a test creates them), and
    no CROP_YIELD_* settings from this host's environment."""
    root = tmp_path / "host"
    (root / "dev").mkdir(parents=True)
    monkeypatch.setattr(device, "DEVICE_ROOT", root)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in list(os.environ):
        if name.startswith("CROP_YIELD_"):
            monkeypatch.delenv(name)
    return root


def with_nodes(root: Path, *names: str) -> Path:
    for name in names:
        (root / "dev" / name).touch()
    return root


@pytest.mark.parametrize(
    ("setting", "cuda", "expected"),
    [
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("cuda", True, "cuda"),
    ],
)
def test_resolve_device(setting: str, cuda: bool, expected: str) -> None:
    assert resolve_device(setting, cuda_available=cuda) == torch.device(expected)  # type: ignore[arg-type]


def test_cuda_without_cuda_is_an_error_not_a_silent_fallback() -> None:
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        resolve_device("cuda", cuda_available=False)


@pytest.mark.parametrize(("cuda", "expected"), [(False, "cpu"), (True, "cuda")])
def test_resolve_device_asks_torch_by_default(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == torch.device(expected)


def test_defaults() -> None:
    settings = Settings()
    assert settings.model_tag == "crop_yield:latest"
    assert settings.device == "auto"
    assert settings.max_rows_per_request == 10_000
    assert settings.port == 3000


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROP_YIELD_MODEL_TAG", "crop_yield:v1")
    monkeypatch.setenv("CROP_YIELD_DEVICE", "cpu")
    monkeypatch.setenv("CROP_YIELD_BATCHING", "false")
    monkeypatch.setenv("CROP_YIELD_MAX_ROWS_PER_REQUEST", "20")
    settings = Settings()
    assert (settings.model_tag, settings.device, settings.batching, settings.max_rows_per_request) == (
        "crop_yield:v1",
        "cpu",
        False,
        20,
    )


@pytest.mark.parametrize(
    ("name", "value"), [("DEVICE", "gpu"), ("MAX_ROWS_PER_REQUEST", "0"), ("PORT", "70000")]
)
def test_invalid_environment_is_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"CROP_YIELD_{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


@pytest.mark.parametrize(
    ("nodes", "cuda", "auto_wants_gpu"),
    [((), False, False), (("nvidiactl", "nvidia0"), False, False), (("nvidiactl", "nvidia0"), True, True)],
)
def test_gpu_is_declared_only_for_cuda(
    host: Path, monkeypatch: pytest.MonkeyPatch, nodes: tuple[str, ...], cuda: bool, auto_wants_gpu: bool
) -> None:
    with_nodes(host, *nodes)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert wants_gpu("cuda")
    assert not wants_gpu("cpu")
    assert wants_gpu("auto") == auto_wants_gpu


def test_the_device_nodes_are_looked_up_under_the_root(host: Path) -> None:
    assert device.gpu_device_nodes() == []
    with_nodes(host, "nvidia-uvm", "nvidia-modeset", "nvidia-caps", "null")  # not a GPU's nodes
    assert device.gpu_device_nodes() == []
    with_nodes(host, "nvidia1", "nvidia0", "nvidiactl", "dxg")
    expected = [host / "dev" / name for name in ("dxg", "nvidia0", "nvidia1", "nvidiactl")]
    assert device.gpu_device_nodes() == expected


@pytest.mark.parametrize("node", ["nvidiactl", "nvidia0", "nvidia12", "dxg"])
def test_cuda_is_asked_of_torch_only_where_a_gpu_can_be(
    host: Path, monkeypatch: pytest.MonkeyPatch, node: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("torch was asked"))
    assert not device.cuda_available()
    with_nodes(host, "nvidia-uvm")
    assert not device.cuda_available()
    with_nodes(host, node)
    asked: list[str] = []

    def available() -> bool:
        asked.append("is_available")
        return True

    monkeypatch.setattr(torch.cuda, "is_available", available)
    assert device.cuda_available()
    assert asked == ["is_available"]
    with pytest.raises(DeviceUnavailableError):
        device.check_device("cuda", cuda=False)
    device.check_device("auto", cuda=False)


def test_the_serving_process_and_start_up_checks_import_no_torch(host: Path) -> None:
    """``bentoml serve``'s own process imports the service module and runs the start-up
    checks before any worker; torch (3 s of start-up) is the workers' alone, on a host
    without NVIDIA device nodes (the subprocess looks under the fake root, whatever this
    host has; with nodes it asks torch about CUDA, by design)."""
    code = (
        "import pathlib, sys, service.inference.device as d; "
        f"d.DEVICE_ROOT = pathlib.Path({str(host)!r}); "
        "import service.service, service.inference.preflight as p; "
        "p.problem(service.service.settings); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_auth_token_is_secret_and_empty_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().auth_token is None
    monkeypatch.setenv("CROP_YIELD_AUTH_TOKEN", "  ")
    assert Settings().auth_token is None
    monkeypatch.setenv("CROP_YIELD_AUTH_TOKEN", "abc")
    settings = Settings()
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "abc"
    assert "abc" not in repr(settings)
