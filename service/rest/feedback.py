"""``POST /feedback``: ground truth for rows predicted earlier (validated request → data plane
→ response), answered like the other JSON routes (``service.rest.asgi.JsonRoute`` while
served, the ``@bentoml.api`` body in ``service.service`` in-process).

The data plane predicts the rows again with the version named (``model_version`` in the body
or the ``X-Model-Version`` header; the default otherwise), scores the observed yields against
those predictions and their 90% and 95% intervals, and counts them in the
``crop_yield_feedback_*`` metrics, never as predictions (``DataPlane.feedback``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from contract import TARGET_NAMES
from service.http import errors
from service.http.asgi import ASGIApp
from service.http.errors import refusal_response
from service.http.paths import FEEDBACK_PATH
from service.inference.dataplane import Plane
from service.inference.errors import DataPlaneError, VersionNotServedError
from service.inference.feedback import Scored, percent
from service.rest import encoding
from service.rest.asgi import JsonRoute
from service.rest.feedback_schemas import FeedbackRequestBase
from service.rest.handlers import answer
from service.settings import MODEL_VERSION_HEADER


async def feedback(plane: Plane, request: FeedbackRequestBase, version: str | None = None) -> Response:
    """``POST /feedback``; ``version``: the ``X-Model-Version`` header's, which must agree with
    the body's ``model_version`` when both are given."""
    if request.model_version is not None and version is not None and request.model_version != version:
        message = (
            f"names version {request.model_version!r}, the {MODEL_VERSION_HEADER} header "
            f"{version!r}: give one, or the same in both"
        )
        return errors.error_response(FEEDBACK_PATH, errors.INVALID, ["model_version"], message)
    rows = encoding.rows_to_matrix(request.inputs)
    actuals = np.array(
        [[getattr(observed, target) for target in TARGET_NAMES] for observed in request.actuals],
        dtype=np.float64,
    ).reshape(len(request.actuals), len(TARGET_NAMES))
    try:
        scored = plane.feedback(rows, actuals, request.model_version or version)
    except VersionNotServedError as exc:  # named by the body's field, or the header
        named = ["model_version"] if request.model_version else ["header", MODEL_VERSION_HEADER]
        return refusal_response(FEEDBACK_PATH, exc, named)
    except DataPlaneError as exc:
        return refusal_response(FEEDBACK_PATH, exc)
    return answer(feedback_json(scored, request.request_ids), scored.version)


def feedback_json(scored: Scored, request_ids: Sequence[str] | None = None) -> bytes:
    """The ``FeedbackResponse`` body: per row the errors (float32, like the predictions),
    whether the actuals lay inside the intervals and the request id; per target the summary."""
    entries: list[dict[str, Any]] = [
        dict(zip(TARGET_NAMES, row, strict=True)) for row in scored.errors.astype(np.float32)
    ]
    for level, flags in (scored.inside or {}).items():
        key = f"inside_{percent(level)}"
        for entry, row in zip(entries, flags.tolist(), strict=True):
            entry[key] = dict(zip(TARGET_NAMES, row, strict=True))
    for entry, request_id in zip(entries, request_ids or (), strict=False):
        entry["request_id"] = request_id
    document = {
        "model": scored.tag,
        "model_version": scored.version,
        "rows": len(entries),
        "errors": entries,
        "summary": scored.totals.summary(),
    }
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def feedback_route(plane: Plane, spec: type[FeedbackRequestBase]) -> dict[tuple[str, str], ASGIApp]:
    """``POST /feedback`` by (method, path), validated with its ``@bentoml.api`` declaration's
    input model (``bentoml_internals.api_input_model``), as ``service.rest.asgi.json_api``'s routes."""
    return {("POST", FEEDBACK_PATH): JsonRoute(FEEDBACK_PATH, plane, spec, feedback)}
