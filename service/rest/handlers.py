"""The JSON API's handlers, one per route: validated request → data plane → response.

Each takes the request model instance validated with BentoML's own input model of its route
(``service.bentoml_internals.api_input_model``), and has two callers that must answer alike:
``service.rest.asgi``'s route apps, which answer every request to these routes while the
service is served (``service.http.hot_paths`` hands the requests to them ahead of BentoML's
router), and the ``@bentoml.api`` bodies in ``service.service``, which BentoML calls with the
validated fields (in-process calls; ``tests/unit/service/test_json_api.py`` compares the
two). Refusals of the data plane are answered from the error table
(``service.http.errors.refusal_response``).
"""

from __future__ import annotations

from starlette.responses import Response

from service.http.errors import refusal_response
from service.inference.dataplane import Plane
from service.inference.errors import DataPlaneError
from service.rest import encoding
from service.rest.schemas import ColumnsRequestBase, PredictRequestBase
from service.settings import MODEL_VERSION_HEADER

JSON = "application/json"
VERSION_HEADER = MODEL_VERSION_HEADER.encode()


def answer(body: bytes, version: str) -> Response:
    """A prediction's answer, naming the version that produced it in ``X-Model-Version``."""
    # A ready Response skips BentoML's pydantic serialization; the body is the documented one.
    response = Response(body, media_type=JSON)
    response.raw_headers.append((VERSION_HEADER, version.encode()))  # Starlette's headers= costs more
    return response


def asked_version(value: str | None) -> str | None:
    """The ``X-Model-Version`` request header: a version, or None (absent or blank) for the default."""
    return value.strip() or None if value is not None else None


async def predict(plane: Plane, request: PredictRequestBase, version: str | None = None) -> Response:
    """``POST /predict``; ``version``: the ``X-Model-Version`` header's."""
    rows = encoding.rows_to_matrix(request.inputs)
    interval = request.interval
    try:
        prediction = await plane.predict(rows, "predict", interval, version=version)
        explanation = prediction.explanation() if request.explain else None
    except DataPlaneError as exc:
        return refusal_response("/predict", exc)
    body = encoding.predictions_json(
        prediction.outputs, prediction.outside, prediction.bounds, interval, prediction.tag, explanation
    )
    return answer(body, prediction.version)


async def predict_columns(plane: Plane, request: ColumnsRequestBase, version: str | None = None) -> Response:
    """``POST /predict_columns``; ``version``: the ``X-Model-Version`` header's."""
    rows = encoding.columns_to_matrix(request)
    try:
        prediction = await plane.predict(
            rows, "predict_columns", request.interval, batch=False, version=version
        )
    except DataPlaneError as exc:
        return refusal_response("/predict_columns", exc)
    body = encoding.columns_json(
        prediction.outputs, prediction.tag, prediction.outside, prediction.bounds, request.interval
    )
    return answer(body, prediction.version)
