"""The Open Inference Protocol's HTTP routes: a lean Starlette app around the data plane.

BentoML 1.4's ``@bentoml.api`` routes are POST-only without path parameters, so these are
routes of a mounted app (``service.service`` mounts ``v2_app(plane)``). They still pass
BentoML's middleware and this service's guards, but neither BentoML's API layer nor
FastAPI's request machinery: handlers read the raw body and answer ready ``Response``
objects, which makes a single-row V2 call cheaper than ``/predict`` (a FastAPI route cost
about a third more per call, measured with wrk). The table of routes is
``service.v2.operations``; rows go through the same data plane, and batcher, as ``/predict``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from contract import FEATURE_NAMES, __version__
from service.http import errors
from service.http.errors import error_response, refusal_response
from service.inference.dataplane import Plane
from service.inference.errors import DataPlaneError
from service.v2 import codec
from service.v2.operations import OPERATIONS

SERVER_NAME = "crop-yield-service"
EXTENSIONS = ["binary_tensor_data"]
BODY_TYPES = frozenset({"", "application/json", "application/octet-stream"})
ENDPOINT = "v2_infer"
"""The ``endpoint`` label of the rows this front end predicts."""


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _tensors(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": codec.OUTPUT_DATATYPES.get(name, "FP32"), "shape": [-1]} for name in names
    ]


class _NotServedError(Exception):
    """The path names another model or version (answered 404)."""


class V2Routes:
    """The handlers, each bound to the data plane."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    def _check_model(self, request: Request) -> tuple[str, str]:
        """(name, version) of the served model when the path names it; else ``_NotServedError``."""
        name, served_version = self.plane.model_name, self.plane.model_version
        asked = request.path_params["model_name"]
        if asked != name:
            raise _NotServedError(f"model {asked!r} is not served here; this server serves {name!r}")
        version = request.path_params.get("version")
        if version is not None and version != served_version:
            raise _NotServedError(
                f"version {version!r} of model {name!r} is not served here; the served version is "
                f"{served_version!r}"
            )
        return name, served_version

    async def _answer(self, request: Request, handle: Callable[[], Awaitable[Response]]) -> Response:
        """Run a model route's handler; refusals become the error table's answers."""
        path = request.url.path
        try:
            return await handle()
        except _NotServedError as exc:
            return error_response(path, errors.NOT_FOUND, ["path"], str(exc))
        except codec.CodecError as exc:
            return error_response(path, errors.INVALID, ["body"], str(exc))
        except DataPlaneError as exc:
            return refusal_response(path, exc, ["body"])

    async def server_metadata(self, request: Request) -> Response:
        return json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def server_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def server_ready(self, request: Request) -> Response:
        if not self.plane.ready:
            return json_response(
                {"ready": False, "error": "the model is still loading"}, errors.NOT_READY.status
            )
        return json_response({"ready": True})

    async def model_metadata(self, request: Request) -> Response:
        async def handle() -> Response:
            name, version = self._check_model(request)
            return json_response(
                {
                    "name": name,
                    "versions": [version],
                    "platform": "pytorch",
                    "inputs": _tensors(FEATURE_NAMES),
                    "outputs": _tensors(codec.OUTPUT_NAMES),
                }
            )

        return await self._answer(request, handle)

    async def model_ready(self, request: Request) -> Response:
        async def handle() -> Response:
            name, _ = self._check_model(request)
            ready = self.plane.ready
            return json_response({"name": name, "ready": ready}, 200 if ready else errors.NOT_READY.status)

        return await self._answer(request, handle)

    async def infer(self, request: Request) -> Response:
        async def handle() -> Response:
            name, version = self._check_model(request)
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type not in BODY_TYPES:
                return error_response(
                    request.url.path,
                    errors.UNSUPPORTED_MEDIA_TYPE,
                    ["header", "content-type"],
                    "send the request as application/json, or application/octet-stream with "
                    f"binary tensors, not {media_type!r}",
                )
            decoded = codec.decode_request(
                await request.body(), request.headers.get(codec.HEADER_LENGTH), self.plane.max_bulk_rows
            )
            prediction = await self.plane.predict(decoded.rows, ENDPOINT, decoded.interval)
            flags = prediction.extrapolated if decoded.wants_flags else None
            body, headers = codec.encode_response(
                decoded, prediction.outputs, name, version, prediction.bounds, flags
            )
            return Response(body, headers=headers)

        return await self._answer(request, handle)


_PATTERNS = [(compile_path(op.path)[0], op.method) for op in OPERATIONS]


async def no_such_route(request: Request) -> Response:
    """Other paths under /v2, and other methods on V2 paths, in the protocol's error format."""
    path = request.url.path
    allowed = sorted({method for pattern, method in _PATTERNS if pattern.match(path)})
    if allowed:
        message = f"{request.method} is not allowed here; use {', '.join(allowed)}"
        allow = ((b"allow", ", ".join(allowed).encode()),)
        return error_response(path, errors.METHOD_NOT_ALLOWED, ["method"], message, allow)
    return error_response(
        path, errors.NOT_FOUND, ["path"], f"no V2 route {path!r}; the routes are listed in /docs.json"
    )


ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def v2_app(plane: Plane) -> Starlette:
    handlers = V2Routes(plane)
    return Starlette(
        routes=[
            *(Route(op.path, getattr(handlers, op.handler), methods=[op.method]) for op in OPERATIONS),
            Route("/v2/{rest:path}", no_such_route, methods=ANY_METHOD),  # tried last
        ]
    )
