"""``GET /metadata``: what is being served, and the mounted app that serves it.

BentoML 1.4 APIs are POST-only, so this GET route lives in a mounted FastAPI app (BentoML
merges its description into ``/docs.json``). The app is built around the data plane it is
given; the route answers 503 until a model is loaded.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI

from contract import FEATURES, TARGETS, __version__
from service.http.errors import refusal_response
from service.inference.dataplane import Plane
from service.inference.errors import NotReadyError
from service.rest.schemas import FeatureInfo, IntervalInfo, ServiceMetadata, TargetInfo

PATH = "/metadata"


def describe(plane: Plane) -> ServiceMetadata:
    model = plane.model
    meta = model.metadata
    stored = meta.to_store()
    return ServiceMetadata(
        model=model.tag,
        created_at=model.created_at,
        versions=plane.versions,
        features=[
            FeatureInfo(
                name=c.name,
                unit=c.unit,
                description=c.description,
                valid_min=c.minimum,
                valid_max=c.maximum,
                train_min=meta.range_of(c.name)[0],
                train_max=meta.range_of(c.name)[1],
            )
            for c in FEATURES
        ],
        targets=[TargetInfo(name=c.name, unit=c.unit, description=c.description) for c in TARGETS],
        metrics=stored["metrics"],
        intervals=None
        if meta.intervals is None
        else IntervalInfo(
            rows=meta.intervals.rows,
            dof=meta.intervals.dof,
            residual_std={k: math.sqrt(v) for k, v in meta.intervals.residual_variance.items()},
        ),
        optimality_gap=meta.fit.optimality_gap,
        training={k: stored[k] for k in ("data", "hyperparameters", "seed", "versions")},
        lineage=meta.lineage,
        device=str(model.device),
        service_version=__version__,
    )


def metadata_app(plane: Plane) -> FastAPI:
    app = FastAPI(title="crop-yield routes", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(
        PATH,
        response_model=ServiceMetadata,
        summary="What is being served",
        description="Model tag and creation time, features (units, valid and training ranges), "
        "targets, training metrics, optimality gap, lineage (data digest, comparison with the "
        "model it replaced), device and service version.",
        tags=["Service APIs"],
    )
    async def metadata() -> Any:
        # async: a plain def would wait for a thread-pool slot behind prediction traffic
        try:
            return describe(plane)
        except NotReadyError as exc:
            return refusal_response(PATH, exc)

    return app
