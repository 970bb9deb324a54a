"""``GET /metadata``: BentoML 1.4 APIs are POST-only, so GET routes live in a small FastAPI
app mounted into the service (BentoML merges its routes into ``/docs.json``)."""

from __future__ import annotations

from typing import Any

import bentoml
from fastapi import FastAPI

from service.schemas import ServiceMetadata

app = FastAPI(title="crop-yield metadata", docs_url=None, redoc_url=None, openapi_url=None)


@app.get(
    "/metadata",
    response_model=ServiceMetadata,
    summary="What is being served",
    description="Model tag and creation time, features (units, valid and training ranges), "
    "targets, training metrics, optimality gap, device and service version.",
    tags=["Service APIs"],
)
def metadata() -> Any:
    return bentoml.get_current_service().describe()
