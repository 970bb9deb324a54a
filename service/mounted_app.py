"""The apps mounted into the BentoML service: ``GET /metadata`` and the V2 protocol.

BentoML 1.4 APIs are POST-only and take no path parameters, so these routes live in
mounted ASGI apps. ``GET /metadata`` is a FastAPI route (BentoML merges it into
``/docs.json``); the Open Inference Protocol is a lean Starlette app (``service.v2.routes``).
Handlers reach the running service with ``bentoml.get_current_service()``.
"""

from __future__ import annotations

from typing import Any

import bentoml
from fastapi import FastAPI

from service.schemas import ServiceMetadata

app = FastAPI(title="crop-yield routes", docs_url=None, redoc_url=None, openapi_url=None)


@app.get(
    "/metadata",
    response_model=ServiceMetadata,
    summary="What is being served",
    description="Model tag and creation time, features (units, valid and training ranges), "
    "targets, training metrics, optimality gap, device and service version.",
    tags=["Service APIs"],
)
async def metadata() -> Any:
    # async: a plain def would wait for a thread-pool slot behind prediction traffic
    return bentoml.get_current_service().describe()
