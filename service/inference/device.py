"""The one place that decides where tensors live.

torch is imported only where a device is made (in the workers) or where CUDA must be asked
about: ``bentoml serve``'s own process reads ``wants_gpu`` and the start-up checks call
``check_device``, and on a host without NVIDIA device nodes neither needs torch (3 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import DeviceSetting

if TYPE_CHECKING:
    import torch

GPU_DEVICE_NODES = ("dev/nvidiactl", "dev/nvidia[0-9]*", "dev/dxg")
"""Present wherever a CUDA device can be (the driver's nodes; /dev/dxg under WSL 2), as
glob patterns under ``DEVICE_ROOT``."""
DEVICE_ROOT = Path("/")
"""Where ``GPU_DEVICE_NODES`` are looked for: the host's root (tests point it at a fake tree)."""


class DeviceUnavailableError(RuntimeError):
    pass


def gpu_device_nodes() -> list[Path]:
    """The NVIDIA device nodes present under ``DEVICE_ROOT``."""
    return sorted(node for pattern in GPU_DEVICE_NODES for node in DEVICE_ROOT.glob(pattern))


def cuda_available() -> bool:
    """Whether torch can use CUDA; False without importing torch where no GPU can be."""
    if not gpu_device_nodes():
        return False
    import torch

    return bool(torch.cuda.is_available())


def check_device(setting: DeviceSetting, cuda: bool | None = None) -> None:
    """``DeviceUnavailableError`` when the setting cannot be honoured here (``cuda`` without CUDA)."""
    if setting == "cuda" and not (cuda_available() if cuda is None else cuda):
        raise DeviceUnavailableError(
            "CROP_YIELD_DEVICE=cuda but no CUDA device is available; use auto or cpu"
        )


def resolve_device(setting: DeviceSetting, cuda_available: bool | None = None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is an error, not a fallback."""
    import torch

    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    check_device(setting, available)
    if setting == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if available else "cpu")


def wants_gpu(setting: DeviceSetting) -> bool:
    """Whether the service should declare a GPU resource (so BentoML assigns one per worker).

    Declared only when the model will actually run on CUDA, so CPU-only hosts serve
    without GPU-allocation warnings.
    """
    return setting == "cuda" or (setting == "auto" and cuda_available())
