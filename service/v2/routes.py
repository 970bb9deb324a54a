"""The Open Inference Protocol's HTTP routes: a lean Starlette app mounted into the service.

BentoML 1.4's ``@bentoml.api`` routes are POST-only without path parameters, so these are
routes of a mounted app. They still pass BentoML's middleware (timeout, concurrency,
metrics) and this service's guards (authentication, body size), but neither BentoML's API
layer nor FastAPI's request machinery: handlers read the raw body and answer ready
``Response`` objects. That is what makes a single-row V2 call cheaper than ``/predict``
(a FastAPI route cost about a third more per call, measured with wrk). Their OpenAPI
description is generated from ``OPERATIONS`` by ``service.v2.openapi``.

Rows go through the same batcher as ``/predict`` (``predict_rows`` of the running service).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import bentoml
import numpy as np
import orjson
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from contract import FEATURE_NAMES, __version__
from service import errors
from service.intervals import NoIntervalsError
from service.v2 import codec, schemas

SERVER_NAME = "crop-yield-service"
EXTENSIONS = ["binary_tensor_data"]
BODY_TYPES = frozenset({"", "application/json", "application/octet-stream"})
log = logging.getLogger("crop_yield.v2")


class ServedModel(Protocol):
    """What the routes need of the running service (``service.service.CropYieldService``)."""

    @property
    def ready(self) -> bool: ...

    @property
    def model_tag(self) -> str: ...

    @property
    def max_bulk_rows(self) -> int: ...

    async def predict_rows(self, rows: np.ndarray, endpoint: str) -> np.ndarray: ...

    def interval_bounds(
        self, rows: np.ndarray, outputs: np.ndarray, level: float | None
    ) -> dict[str, np.ndarray] | None: ...

    def extrapolated(self, rows: np.ndarray) -> np.ndarray: ...


def served() -> ServedModel | None:
    """The running service instance, or None while it is still being created."""
    try:
        service: ServedModel = bentoml.get_current_service()
    except BentoMLException:
        return None
    return service


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def error(message: str, kind: errors.ApiError | int, headers: dict[str, str] | None = None) -> Response:
    """The protocol's ``{"error": message}`` with the status (and headers) of ``kind``."""
    if isinstance(kind, int):  # 405 for a method no operation has: not in the table
        return json_response({"error": message}, kind, headers)
    own = {k.decode(): v.decode() for k, v in kind.headers}
    return json_response({"error": message}, kind.status, {**own, **(headers or {})})


def _resolve(request: Request) -> tuple[ServedModel, str, str] | Response:
    """The served model when the path names it, else the error response to send."""
    service = served()
    if service is None:
        return error("the model is still loading", errors.OVERLOADED)
    name, _, served_version = service.model_tag.partition(":")
    asked = request.path_params["model_name"]
    if asked != name:
        return error(f"model {asked!r} is not served here; this server serves {name!r}", errors.NOT_FOUND)
    version = request.path_params.get("version")
    if version is not None and version != served_version:
        return error(
            f"version {version!r} of model {name!r} is not served here; the served version is "
            f"{served_version!r}",
            errors.NOT_FOUND,
        )
    return service, name, served_version


# -- handlers ---------------------------------------------------------------------------


async def server_metadata(request: Request) -> Response:
    return json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


async def server_live(request: Request) -> Response:
    return json_response({"live": True})


async def server_ready(request: Request) -> Response:
    service = served()
    if service is None or not service.ready:
        return json_response({"ready": False, "error": "the model is still loading"}, 503)
    return json_response({"ready": True})


def _tensors(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": codec.OUTPUT_DATATYPES.get(name, "FP32"), "shape": [-1]} for name in names
    ]


async def model_metadata(request: Request) -> Response:
    resolved = _resolve(request)
    if isinstance(resolved, Response):
        return resolved
    _, name, version = resolved
    return json_response(
        {
            "name": name,
            "versions": [version],
            "platform": "pytorch",
            "inputs": _tensors(FEATURE_NAMES),
            "outputs": _tensors(codec.OUTPUT_NAMES),
        }
    )


async def model_ready(request: Request) -> Response:
    resolved = _resolve(request)
    if isinstance(resolved, Response):
        return resolved
    service, name, _ = resolved
    return json_response({"name": name, "ready": service.ready}, 200 if service.ready else 503)


async def infer(request: Request) -> Response:
    resolved = _resolve(request)
    if isinstance(resolved, Response):
        return resolved
    service, name, version = resolved
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in BODY_TYPES:
        return error(
            "send the request as application/json, or application/octet-stream with "
            f"binary tensors, not {media_type!r}",
            errors.UNSUPPORTED_MEDIA_TYPE,
        )
    try:
        decoded = codec.decode_request(
            await request.body(), request.headers.get(codec.HEADER_LENGTH), service.max_bulk_rows
        )
        outputs = await service.predict_rows(decoded.rows, "v2_infer")
        bounds = service.interval_bounds(decoded.rows, outputs, decoded.interval)
    except (codec.V2Error, NoIntervalsError) as exc:
        return error(str(exc), errors.INVALID)
    except ServiceUnavailable as exc:
        log.info("answered %d: %s", errors.OVERLOADED.status, exc, extra={"status": errors.OVERLOADED.status})
        return error(f"overloaded: {exc}; retry after the Retry-After seconds", errors.OVERLOADED)
    flags = service.extrapolated(decoded.rows) if decoded.wants_flags else None
    body, headers = codec.encode_response(decoded, outputs, name, version, bounds, flags)
    return Response(body, headers=headers)


# -- the route table (served here, documented by service.v2.openapi) --------------------


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    endpoint: Callable[[Request], Awaitable[Response]]
    summary: str
    response_model: type[BaseModel]
    description: str = ""
    """Errors are documented from ``service.errors.TABLE`` (by ``service.openapi``)."""


MODEL = "/v2/models/{model_name}"
VERSION = "/v2/models/{model_name}/versions/{version}"
INFER_DOC = (
    "Predict apple and orange yields (t/ha) for N rows given as one tensor per feature. "
    "JSON, or the binary tensor extension: the JSON header, then raw little-endian tensor bytes."
)
OPERATIONS: tuple[Operation, ...] = (
    Operation("/v2", "GET", server_metadata, "Server metadata", schemas.ServerMetadata),
    Operation("/v2/health/live", "GET", server_live, "Server live", schemas.ServerLive),
    Operation("/v2/health/ready", "GET", server_ready, "Server ready", schemas.ServerReady),
    Operation(MODEL, "GET", model_metadata, "Model metadata", schemas.ModelMetadata),
    Operation(VERSION, "GET", model_metadata, "Model metadata (version)", schemas.ModelMetadata),
    Operation(f"{MODEL}/ready", "GET", model_ready, "Model ready", schemas.ModelReady),
    Operation(
        f"{VERSION}/ready",
        "GET",
        model_ready,
        "Model ready (version)",
        schemas.ModelReady,
    ),
    Operation(f"{MODEL}/infer", "POST", infer, "Inference", schemas.InferenceResponse, INFER_DOC),
    Operation(
        f"{VERSION}/infer",
        "POST",
        infer,
        "Inference (version)",
        schemas.InferenceResponse,
        INFER_DOC,
    ),
)

_PATTERNS = [(compile_path(op.path)[0], op.method) for op in OPERATIONS]


async def no_such_route(request: Request) -> Response:
    """Other paths under /v2, and other methods on V2 paths, in the protocol's error format."""
    allowed = sorted({method for pattern, method in _PATTERNS if pattern.match(request.url.path)})
    if allowed:
        message = f"{request.method} is not allowed here; use {', '.join(allowed)}"
        return error(message, 405, {"allow": ", ".join(allowed)})
    return error(f"no V2 route {request.url.path!r}; the routes are listed in /docs.json", errors.NOT_FOUND)


ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
app = Starlette(
    routes=[
        *(Route(op.path, op.endpoint, methods=[op.method]) for op in OPERATIONS),
        Route("/v2/{rest:path}", no_such_route, methods=ANY_METHOD),  # tried last
    ]
)
