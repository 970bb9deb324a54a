"""The one place that decides where tensors live."""

from __future__ import annotations

import torch

from service.settings import DeviceSetting


class DeviceUnavailableError(RuntimeError):
    pass


def resolve_device(setting: DeviceSetting, cuda_available: bool | None = None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is an error, not a fallback."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda":
        if not available:
            raise DeviceUnavailableError(
                "CROP_YIELD_DEVICE=cuda but no CUDA device is available; use auto or cpu"
            )
        return torch.device("cuda")
    return torch.device("cuda" if available else "cpu")


def wants_gpu(setting: DeviceSetting) -> bool:
    """Whether the service should declare a GPU resource (so BentoML assigns one per worker).

    Declared only when the model will actually run on CUDA, so CPU-only hosts serve
    without GPU-allocation warnings.
    """
    return setting == "cuda" or (setting == "auto" and torch.cuda.is_available())
