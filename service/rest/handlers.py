"""The JSON API's handlers: decode → data plane → encode.

The ``@bentoml.api`` declarations in ``service.service`` validate the body with the
schemas and call these with the service's data plane. Refusals of the data plane are
answered from the error table (``service.http.errors.refusal_response``).
"""

from __future__ import annotations

from starlette.responses import Response

from service.http.errors import refusal_response
from service.inference.dataplane import Plane
from service.inference.errors import DataPlaneError
from service.rest import encoding
from service.rest.schemas import ColumnsRequestBase, CropConditions

JSON = "application/json"


async def predict(plane: Plane, inputs: list[CropConditions], interval: float | None) -> Response:
    rows = encoding.rows_to_matrix(inputs)
    try:
        prediction = await plane.predict(rows, "predict", interval)
    except DataPlaneError as exc:
        return refusal_response("/predict", exc)
    body = encoding.predictions_json(
        prediction.outputs, prediction.outside, prediction.bounds, interval, plane.model.tag
    )
    # A ready Response skips BentoML's pydantic serialization; the body is the documented one.
    return Response(body, media_type=JSON)


async def predict_columns(plane: Plane, request: ColumnsRequestBase) -> Response:
    rows = encoding.columns_to_matrix(request)
    try:
        prediction = await plane.predict(rows, "predict_columns", request.interval, batch=False)
    except DataPlaneError as exc:
        return refusal_response("/predict_columns", exc)
    body = encoding.columns_json(
        prediction.outputs, plane.model.tag, prediction.outside, prediction.bounds, request.interval
    )
    return Response(body, media_type=JSON)
