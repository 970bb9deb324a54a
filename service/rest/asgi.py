"""The JSON API's hot routes as lean ASGI apps (served by ``service.http.hot_paths``).

A route app validates the body with the very model BentoML's API layer would use (the
``@bentoml.api`` declaration's input spec), so a rejected body gets the same 400 as through
BentoML: ``{"error": "<n> validation error for <model>", "detail": [pydantic's errors,
without the input values]}``, logged as one INFO line. A valid body's model instance goes
to the route's handler (``service.rest.handlers``), the one the ``@bentoml.api`` body calls,
with the version the ``X-Model-Version`` header asks for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.http import errors
from service.http.asgi import ASGIApp, Receive, Scope, Send, read_body
from service.inference.dataplane import Plane
from service.rest import handlers
from service.rest.schemas import ColumnsRequestBase, PredictRequestBase
from service.settings import MODEL_VERSION_HEADER

log = logging.getLogger("crop_yield.rest")

RequestT = TypeVar("RequestT", bound=BaseModel)
VERSION_HEADER = MODEL_VERSION_HEADER.encode()


def invalid(path: str, exc: ValidationError) -> Response:
    log.info(
        "answered 400: %s rejected, %d validation error(s)", path, exc.error_count(), extra={"status": 400}
    )
    document = {
        "error": f"{exc.error_count()} validation error for {exc.title}",
        "detail": exc.errors(include_context=False, include_input=False),
    }
    return Response(orjson.dumps(document), status_code=errors.INVALID.status, media_type="application/json")


def asked_version(scope: Scope) -> str | None:
    """The ``X-Model-Version`` request header's version, or None (absent or blank)."""
    for name, value in scope["headers"]:
        if name == VERSION_HEADER:
            return bytes(value).decode("latin-1").strip() or None
    return None


class JsonRoute(Generic[RequestT]):
    """One route: the body validated with ``spec``, then ``handle(plane, request)``."""

    def __init__(
        self,
        path: str,
        plane: Plane,
        spec: type[RequestT],
        handle: Callable[[Plane, RequestT, str | None], Awaitable[Response]],
    ) -> None:
        self.path = path
        self.plane = plane
        self.spec = spec
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = self.spec.model_validate_json(await read_body(receive) or b"{}")
        except ValidationError as exc:
            response = invalid(self.path, exc)
        else:
            response = await self.handle(self.plane, request, asked_version(scope))
        await response(scope, receive, send)


def json_api(
    plane: Plane, predict_spec: type[PredictRequestBase], columns_spec: type[ColumnsRequestBase]
) -> dict[tuple[str, str], ASGIApp]:
    """``POST /predict`` and ``POST /predict_columns`` by (method, path), each validated with
    its ``@bentoml.api`` declaration's input model (``bentoml_internals.api_input_model``)."""
    return {
        ("POST", "/predict"): JsonRoute("/predict", plane, predict_spec, handlers.predict),
        ("POST", "/predict_columns"): JsonRoute(
            "/predict_columns", plane, columns_spec, handlers.predict_columns
        ),
    }
