"""What the Open Inference Protocol says about the served model, whatever the transport:
which model and version a call may name, and the model's metadata. Used by the REST routes
(``service.v2.routes``) and the gRPC front end (``service.grpc``), so both refuse and
describe alike."""

from __future__ import annotations

from typing import Any

from contract import FEATURE_NAMES, __version__
from service.inference.dataplane import Plane
from service.observability import statistics
from service.v2 import codec
from service.v2.model_config import model_config

SERVER_NAME = "crop-yield-service"
PLATFORM = "pytorch"


class NotServedError(Exception):
    """The call names another model or version (404 over HTTP, NOT_FOUND over gRPC)."""


def check_model(plane: Plane, asked: str, version: str | None) -> tuple[str, str]:
    """(name, version) when the call names the served model and, if it names one, a served
    version (the default when it names none); else ``NotServedError`` listing the served ones."""
    name = plane.model_name
    if asked != name:
        raise NotServedError(f"model {asked!r} is not served here; this server serves {name!r}")
    served = plane.versions
    if version is None:
        return name, served[0]
    if version not in served:
        listed = ", ".join(repr(v) for v in served)
        raise NotServedError(f"version {version!r} of model {name!r} is not served here; served: {listed}")
    return name, version


def tensors(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": codec.OUTPUT_DATATYPES.get(name, "FP32"), "shape": [-1]} for name in names
    ]


def model_metadata(name: str, versions: list[str]) -> dict[str, Any]:
    """The model's signature; ``versions`` are the served ones, the default first."""
    return {
        "name": name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": tensors(FEATURE_NAMES),
        "outputs": tensors(codec.OUTPUT_NAMES),
    }


def server_metadata(extensions: list[str]) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}


def config_of(plane: Plane, name: str, version: str) -> dict[str, Any]:
    """Triton's model configuration of a served ``version`` (``service.v2.model_config``)."""
    return model_config(name, plane.model_of(version).tag, plane.versions[0], plane.serving)


def statistics_of(plane: Plane, name: str, version: str | None) -> dict[str, Any]:
    """Triton's statistics (``service.observability.statistics``): of ``version``, or of every
    served version when None."""
    versions = plane.versions if version is None else [version]
    return {"model_stats": statistics.read(name, versions, plane.versions[0])}
