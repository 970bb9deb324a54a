"""Device resolution and the Settings object."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from service.inference import device
from service.inference.device import DeviceUnavailableError, resolve_device, wants_gpu
from service.settings import Settings


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


def test_resolve_device_uses_torch_by_default() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


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


def test_gpu_is_declared_only_for_cuda() -> None:
    assert wants_gpu("cuda")
    assert not wants_gpu("cpu")
    assert wants_gpu("auto") == torch.cuda.is_available()


def test_cuda_is_asked_of_torch_only_where_a_gpu_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("torch was asked"))
    assert not device.cuda_available()
    monkeypatch.setattr(device.glob, "glob", lambda pattern: ["/dev/nvidiactl"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.cuda_available()
    with pytest.raises(DeviceUnavailableError):
        device.check_device("cuda", cuda=False)
    device.check_device("auto", cuda=False)


def test_the_serving_process_and_start_up_checks_import_no_torch() -> None:
    """``bentoml serve``'s own process imports the service module and runs the start-up
    checks before any worker; torch (3 s of start-up) is the workers' alone."""
    code = (
        "import sys, service.service, service.inference.preflight as p; "
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
