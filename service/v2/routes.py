"""The Open Inference Protocol's HTTP routes: a lean ASGI app around the data plane.

``service.service`` hands every ``/v2`` request to ``v2_app(plane, control)`` ahead of BentoML's
router (``service.http.hot_paths``), after the service's guards. Inference, the hot route,
goes straight from the ASGI scope to its handler; the other routes go through a Starlette
router; both are built from the route table (``service.v2.operations``). Handlers read the
raw body and answer ready ``Response`` objects, without a web framework's per-call request
and response machinery (what a FastAPI route cost: docs/architecture.md, "Figures behind
the design"). Rows go through the same data plane, and batcher, as ``/predict``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from service.http import errors
from service.http.asgi import Receive, Scope, Send, header, read_body
from service.http.errors import error_response, refusal_response
from service.inference.control import Control
from service.inference.dataplane import Plane
from service.inference.errors import DataPlaneError
from service.settings import MODEL_VERSION_HEADER
from service.v2 import codec, repository_routes, served
from service.v2.operations import OPERATIONS

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
BODY_TYPES = frozenset({"", "application/json", "application/octet-stream"})
ENDPOINT = "v2_infer"
"""The ``endpoint`` label of the rows this front end predicts."""


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


class V2Routes:
    """The handlers, each bound to the data plane (and the repository's to the model control)."""

    def __init__(self, plane: Plane, control: Control) -> None:
        self.plane = plane
        self.control = control

    def _check_model(self, params: Mapping[str, Any]) -> tuple[str, str]:
        return served.check_model(self.plane, params["model_name"], params.get("version"))

    async def _answer(self, path: str, handle: Callable[[], Awaitable[Response]]) -> Response:
        """Run a model route's handler; refusals become the error table's answers."""
        try:
            return await handle()
        except served.NotServedError as exc:
            return error_response(path, errors.NOT_FOUND, ["path"], str(exc))
        except codec.CodecError as exc:
            return error_response(path, errors.INVALID, ["body"], str(exc))
        except DataPlaneError as exc:
            return refusal_response(path, exc, ["body"])

    async def server_metadata(self, request: Request) -> Response:
        return json_response(served.server_metadata(EXTENSIONS))

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
            name, version = self._check_model(request.path_params)
            asked = request.path_params.get("version")
            return json_response(served.model_metadata(name, [version] if asked else self.plane.versions))

        return await self._answer(request.url.path, handle)

    async def model_config(self, request: Request) -> Response:
        async def handle() -> Response:
            name, version = self._check_model(request.path_params)
            return json_response(served.config_of(self.plane, name, version))

        return await self._answer(request.url.path, handle)

    async def all_statistics(self, request: Request) -> Response:
        """Every model's: this server serves one."""

        async def handle() -> Response:
            return json_response(served.statistics_of(self.plane, self.plane.model_name, None))

        return await self._answer(request.url.path, handle)

    async def model_statistics(self, request: Request) -> Response:
        async def handle() -> Response:
            params = request.path_params
            name, version = self._check_model(params)
            return json_response(served.statistics_of(self.plane, name, params.get("version") and version))

        return await self._answer(request.url.path, handle)

    async def model_ready(self, request: Request) -> Response:
        async def handle() -> Response:
            name, _ = self._check_model(request.path_params)
            ready = self.plane.ready
            return json_response({"name": name, "ready": ready}, 200 if ready else errors.NOT_READY.status)

        return await self._answer(request.url.path, handle)

    async def infer(
        self, path: str, params: Mapping[str, Any], content_type: str, header_length: str | None, body: bytes
    ) -> Response:
        """``POST .../infer``, called from the ASGI scope by ``V2App`` (no ``Request``)."""

        async def handle() -> Response:
            name, _ = self._check_model(params)
            media_type = content_type.split(";", 1)[0].strip().lower()
            if media_type not in BODY_TYPES:
                return error_response(
                    path,
                    errors.UNSUPPORTED_MEDIA_TYPE,
                    ["header", "content-type"],
                    "send the request as application/json, or application/octet-stream with "
                    f"binary tensors, not {media_type!r}",
                )
            decoded = codec.decode_request(body, header_length, self.plane.max_bulk_rows)
            prediction = await self.plane.predict(
                decoded.rows, ENDPOINT, decoded.interval, version=params.get("version")
            )
            flags = prediction.extrapolated if decoded.wants_flags else None
            explanation = prediction.explanation() if decoded.explain else None
            body_out, headers = codec.encode_response(
                decoded, prediction.outputs, name, prediction.version, prediction.bounds, flags, explanation
            )
            return Response(body_out, headers={**headers, MODEL_VERSION_HEADER: prediction.version})

        return await self._answer(path, handle)

    async def repository_index(self, request: Request) -> Response:
        return await repository_routes.index(self.control, request)

    async def repository_load(self, request: Request) -> Response:
        return await repository_routes.change(self.plane, self.control, request, "load")

    async def repository_unload(self, request: Request) -> Response:
        return await repository_routes.change(self.plane, self.control, request, "unload")

    async def repository_default(self, request: Request) -> Response:
        return await repository_routes.change(self.plane, self.control, request, "default")


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
HEADER_LENGTH = codec.HEADER_LENGTH.encode()
INFER = "infer"
"""The handler the route table names for inference: its routes are dispatched from the scope."""


class V2App:
    """The infer routes straight to their handler; everything else through the router.

    The router holds the table's other routes, then a catch-all whose ``no_such_route``
    answers other methods on the table's paths (the infer paths included) with the
    protocol's 405 and ``Allow``, and any other path with its 404.
    """

    def __init__(self, plane: Plane, control: Control) -> None:
        self.handlers = V2Routes(plane, control)
        self.infer_paths: dict[str, tuple[re.Pattern[str], ...]] = {}
        for op in OPERATIONS:
            if op.handler == INFER:
                pattern = compile_path(op.path)[0]
                self.infer_paths[op.method] = (*self.infer_paths.get(op.method, ()), pattern)
        self.router = Starlette(
            routes=[
                *(
                    Route(op.path, getattr(self.handlers, op.handler), methods=[op.method])
                    for op in OPERATIONS
                    if op.handler != INFER
                ),
                Route("/v2/{rest:path}", no_such_route, methods=ANY_METHOD),  # tried last
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for pattern in self.infer_paths.get(scope["method"], ()):
                match = pattern.fullmatch(scope["path"])
                if match is not None:
                    response = await self.handlers.infer(
                        scope["path"],
                        match.groupdict(),
                        header(scope, b"content-type") or "",
                        header(scope, HEADER_LENGTH),
                        await read_body(receive),
                    )
                    await response(scope, receive, send)
                    return
        await self.router(scope, receive, send)


def v2_app(plane: Plane, control: Control) -> V2App:
    return V2App(plane, control)
