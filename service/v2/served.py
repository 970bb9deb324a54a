"""What the Open Inference Protocol says about the served model, whatever the transport:
which model and version a call may name, and the model's metadata. Used by the REST routes
(``service.v2.routes``) and the gRPC front end (``service.grpc``), so both refuse and
describe alike."""

from __future__ import annotations

from typing import Any

from contract import FEATURE_NAMES, __version__
from service.inference.dataplane import Plane
from service.v2 import codec

SERVER_NAME = "crop-yield-service"
PLATFORM = "pytorch"


class NotServedError(Exception):
    """The call names another model or version (404 over HTTP, NOT_FOUND over gRPC)."""


def check_model(plane: Plane, asked: str, version: str | None) -> tuple[str, str]:
    """(name, version) of the served model when the call names it; else ``NotServedError``."""
    name, served_version = plane.model_name, plane.model_version
    if asked != name:
        raise NotServedError(f"model {asked!r} is not served here; this server serves {name!r}")
    if version is not None and version != served_version:
        raise NotServedError(
            f"version {version!r} of model {name!r} is not served here; the served version is "
            f"{served_version!r}"
        )
    return name, served_version


def tensors(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": codec.OUTPUT_DATATYPES.get(name, "FP32"), "shape": [-1]} for name in names
    ]


def model_metadata(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": PLATFORM,
        "inputs": tensors(FEATURE_NAMES),
        "outputs": tensors(codec.OUTPUT_NAMES),
    }


def server_metadata(extensions: list[str]) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}
