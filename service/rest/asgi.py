"""The JSON API's hot routes as one lean ASGI app (served by ``service.http.hot_paths``).

The body is validated with the very models BentoML's API layer would use (the
``@bentoml.api`` declarations' input specs), so a rejected body gets the same 400 as
before: ``{"error": "<n> validation error for <model>", "detail": [pydantic's errors,
without the input values]}``, logged as one INFO line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.http import errors
from service.http.asgi import Receive, Scope, Send, read_body
from service.inference.dataplane import Plane
from service.rest import handlers
from service.rest.schemas import ColumnsRequestBase, PredictRequestBase

log = logging.getLogger("crop_yield.rest")


def invalid(path: str, exc: ValidationError) -> Response:
    log.info(
        "answered 400: %s rejected, %d validation error(s)", path, exc.error_count(), extra={"status": 400}
    )
    document = {
        "error": f"{exc.error_count()} validation error for {exc.title}",
        "detail": exc.errors(include_context=False, include_input=False),
    }
    return Response(orjson.dumps(document), status_code=errors.INVALID.status, media_type="application/json")


class JsonApi:
    """``POST /predict`` and ``POST /predict_columns``: validate, then the data plane."""

    def __init__(
        self, plane: Plane, predict_spec: type[PredictRequestBase], columns_spec: type[ColumnsRequestBase]
    ) -> None:
        self.plane = plane
        self.handlers: dict[str, tuple[type[BaseModel], Callable[[BaseModel], Awaitable[Response]]]] = {
            "/predict": (predict_spec, self._predict),
            "/predict_columns": (columns_spec, self._predict_columns),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        spec, handle = self.handlers[path]
        try:
            request = spec.model_validate_json(await read_body(receive) or b"{}")
        except ValidationError as exc:
            response = invalid(path, exc)
        else:
            response = await handle(request)
        await response(scope, receive, send)

    async def _predict(self, request: BaseModel) -> Response:
        assert isinstance(request, PredictRequestBase)  # the spec of its route
        return await handlers.predict(self.plane, request.inputs, request.interval)

    async def _predict_columns(self, request: BaseModel) -> Response:
        assert isinstance(request, ColumnsRequestBase)
        return await handlers.predict_columns(self.plane, request)

    @property
    def routes(self) -> dict[tuple[str, str], JsonApi]:
        return {("POST", path): self for path in self.handlers}
