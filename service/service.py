"""The BentoML service: ``POST /predict``, ``POST /predict_columns``, ``GET /metadata`` and the
Open Inference Protocol (``/v2/...``, see ``service.v2``).

Serve with ``python -m service`` (reads the settings, then runs ``bentoml serve``).
BentoML provides ``/livez``, ``/readyz``, ``/metrics``, ``/docs.json`` and Swagger UI at ``/``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import torch
from bentoml.exceptions import NotFound, ServiceUnavailable
from starlette.responses import Response

from contract import FEATURE_NAMES, FEATURES, TARGETS, __version__
from service import convert, errors, logs, metrics, monitoring, paths, preflight, runtime
from service.api_document import Deployment, docs_page, present
from service.asgi import error_body
from service.batching import RowBatcher
from service.device import resolve_device, wants_gpu
from service.intervals import Intervals, NoIntervalsError
from service.middleware import BearerAuth, DocsPage, JsonOnly, PatchedOpenAPI, UnroutableV2Paths
from service.model import LinearModel, ModelLoadError, missing_model_message
from service.mounted_app import app as mounted_app
from service.openapi import patch_spec
from service.schemas import (
    SEED_004_EXAMPLE,
    ColumnsRequestBase,
    ColumnsResponse,
    CropConditions,
    FeatureInfo,
    IntervalInfo,
    PredictResponse,
    ServiceMetadata,
    TargetInfo,
    columns_request_model,
    predict_request_model,
)
from service.settings import get_settings
from service.traffic import RequestContext, RequestGate
from service.v2 import routes as v2_routes

settings = get_settings()
PredictRequest = predict_request_model(settings.max_rows_per_request)
ColumnsRequest = columns_request_model(settings.max_bulk_rows)
# Tracing stays on the middleware stack in BentoML 1.4; excluding every URL is how it is
# switched off (a span per request cost a large share of worker CPU).
TRACING_EXCLUDED = [] if settings.tracing else [".*"]
TIMEOUT_BACKSTOP_S = 5.0
# Here too, not only in the worker's start-up hook: BentoML's serving process (which
# imports this module) then logs in the same format as the workers.
logs.configure(settings.log_format)


log = logging.getLogger("crop_yield.service")


def overloaded(path: str, reason: str) -> Response:
    """503 with Retry-After for rows shed by the batching queue: normal under overload, so
    one INFO line, not BentoML's generic message with an ERROR traceback."""
    error = errors.OVERLOADED
    log.info("answered %d: %s", error.status, reason, extra={"status": error.status})
    body = error_body(path, error.error, [], f"{reason}; retry after the Retry-After seconds")
    headers = {k.decode(): v.decode() for k, v in error.headers}
    return Response(body, status_code=error.status, media_type="application/json", headers=headers)


def no_intervals(path: str, reason: str) -> Response:
    """400 for an interval asked of a model whose metadata has no interval statistics."""
    body = error_body(path, errors.INVALID.error, ["interval"], reason)
    return Response(body, status_code=errors.INVALID.status, media_type="application/json")


@bentoml.asgi_app(mounted_app, path="/")
@bentoml.asgi_app(v2_routes.app, path="/")
@bentoml.service(
    name="crop_yield",
    workers=settings.workers,
    # The request timeout and concurrency limit are the service's own (service.traffic);
    # BentoML's timeout stays only as a backstop behind it, and its limit is left off.
    traffic={"timeout": settings.request_timeout + TIMEOUT_BACKSTOP_S},
    logging={"access": {"enabled": settings.access_log}},
    tracing={"excluded_urls": TRACING_EXCLUDED},
    resources={"gpu": 1} if wants_gpu(settings.device) else {"cpu": "1"},
)
class CropYieldService:
    model_ref = bentoml.models.BentoModel(settings.model_tag)

    def __init__(self) -> None:
        torch.set_num_threads(1)  # one small matmul per call: threads only add overhead
        device = resolve_device(settings.device)
        try:
            stored = self.model_ref
        except NotFound:
            raise ModelLoadError(missing_model_message(settings.model_tag)) from None
        self.model = LinearModel.load(
            Path(stored.path),
            str(stored.tag),
            dict(stored.info.metadata),
            stored.info.creation_time.isoformat(),
            device,
        )
        # Warm-up: the first call pays for lazy initialisation (and CUDA context creation).
        probe = np.asarray([[SEED_004_EXAMPLE[name] for name in FEATURE_NAMES]], dtype=np.float32)
        if not np.all(np.isfinite(self.model.predict(probe))):
            raise ModelLoadError(f"model {self.model.tag} gives non-finite predictions")
        self.monitor = monitoring.Monitor(
            *monitoring.training_ranges(
                self.model.metadata, self.model.weight.cpu().numpy(), self.model.bias.cpu().numpy()
            )
        )
        self.box = self.monitor.box
        self.intervals = Intervals(self.model.metadata.intervals, self.model.tag)
        self.batcher: RowBatcher | None = None
        self.version = __version__
        self._ready = False  # set once the startup hook below has run

    @bentoml.on_deployment
    def _preflight() -> None:
        """In ``bentoml serve``'s own process, before any worker: stop with one line and
        status 2 when the model cannot be served (see service.preflight)."""
        preflight.exit_on_problem(settings)

    @bentoml.on_startup
    async def _start_runtime(self) -> None:
        if settings.batching:
            self.batcher = RowBatcher(
                self._call_model,
                settings.max_batch_size,
                settings.max_latency_ms,
                on_model_call=metrics.rows_per_model_call().observe,
            )
        name, _, version = self.model.tag.partition(":")
        metrics.model_info().labels(model=name, version=version, device=str(self.model.device)).set(1)
        runtime.quiet_validation_errors()
        logs.configure(settings.log_format)
        runtime.freeze_startup_heap()
        loop = asyncio.get_running_loop()
        self._gc_task = loop.create_task(runtime.collect_periodically())
        self._monitor_task = loop.create_task(monitoring.PrometheusSink(self.monitor).run())
        self._ready = True

    def _call_model(self, rows: np.ndarray) -> np.ndarray:
        """Every model call of every route: predict, then count the call for monitoring."""
        outputs = self.model.predict(rows)
        if settings.monitoring:
            self.monitor.observe(rows, outputs)
        return outputs

    async def __is_ready__(self) -> bool:
        """/readyz: the model is loaded, the warm-up prediction passed, the runtime started."""
        return self._ready

    @property
    def ready(self) -> bool:
        """The condition of /readyz (also answered by /v2/health/ready)."""
        return self._ready

    @property
    def model_tag(self) -> str:
        return self.model.tag

    @property
    def max_bulk_rows(self) -> int:
        return settings.max_bulk_rows

    async def predict_rows(self, rows: np.ndarray, endpoint: str) -> np.ndarray:
        """float32 n×3 → n×2: through the batcher up to the /predict row limit, directly above it.

        Rows of concurrent calls from any endpoint using this (``/predict``, V2 infer) may
        share one model call; larger requests would only hold the batch up.
        """
        if self.batcher is not None and len(rows) <= settings.max_rows_per_request:
            outputs = await self.batcher(rows)
        else:
            outputs = self._call_model(rows)
            metrics.rows_per_model_call().observe(len(rows))
        metrics.rows_predicted().labels(endpoint=endpoint).inc(len(rows))
        return outputs

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, inputs: list[CropConditions], interval: float | None = None) -> Response:
        """Predict apple and orange yields for each region, in order, with a flag for
        inputs outside the training range and, when asked for, prediction intervals.

        Rows of concurrent calls are merged into one model call (adaptive batching).
        """
        rows = convert.rows_to_matrix(inputs)
        try:
            outputs = await self.predict_rows(rows, "predict")
            bounds = self.interval_bounds(rows, outputs, interval)
        except ServiceUnavailable as exc:
            return overloaded("/predict", str(exc))
        except NoIntervalsError as exc:
            return no_intervals("/predict", str(exc))
        body = convert.predictions_json(outputs, self.box.outside(rows), bounds, interval, self.model.tag)
        # A ready Response skips BentoML's pydantic serialization; the body is the documented one.
        return Response(body, media_type="application/json")

    @bentoml.api(route="/predict_columns", input_spec=ColumnsRequest, output_spec=ColumnsResponse)
    async def predict_columns(self, **columns: Any) -> Response:
        """Bulk prediction from columns (up to the configured maximum rows), validated as
        arrays; with a column of outside-training-range flags and, when asked for, intervals."""
        request = ColumnsRequestBase.model_construct(**columns)
        rows = convert.columns_to_matrix(request)
        outputs = self._call_model(rows)
        metrics.rows_per_model_call().observe(len(outputs))
        metrics.rows_predicted().labels(endpoint="predict_columns").inc(len(outputs))
        try:
            bounds = self.interval_bounds(rows, outputs, request.interval)
        except NoIntervalsError as exc:
            return no_intervals("/predict_columns", str(exc))
        body = convert.columns_json(outputs, self.model.tag, self.box.outside(rows), bounds, request.interval)
        return Response(body, media_type="application/json")

    def extrapolated(self, rows: np.ndarray) -> np.ndarray:
        """Per row: any feature outside the training range (the V2 ``extrapolated`` output)."""
        return np.asarray(self.box.outside(rows).any(axis=1))

    def interval_bounds(
        self, rows: np.ndarray, outputs: np.ndarray, level: float | None
    ) -> dict[str, np.ndarray] | None:
        """The prediction intervals' bounds at ``level`` (None: not asked for)."""
        return None if level is None else self.intervals.bounds(rows, outputs, level)

    def describe(self) -> ServiceMetadata:
        meta = self.model.metadata
        stored = meta.to_store()
        return ServiceMetadata(
            model=self.model.tag,
            created_at=self.model.created_at,
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
            device=str(self.model.device),
            service_version=self.version,
        )


# Outermost first: request id and deadline, authentication (headers only), unroutable V2
# paths, the body and concurrency gate, the media type, then the OpenAPI document and docs page.
# The decorators turned the class into a bentoml Service (untyped).
_service: Any = CropYieldService
_service.add_asgi_middleware(RequestContext, timeout=settings.request_timeout)
if settings.auth_token is not None:
    _service.add_asgi_middleware(
        BearerAuth, token=settings.auth_token.get_secret_value(), protects=paths.is_protected
    )
_service.add_asgi_middleware(UnroutableV2Paths)
_service.add_asgi_middleware(
    RequestGate,
    max_bytes=settings.max_body_bytes,
    body_timeout=settings.body_timeout,
    max_concurrency=math.ceil(settings.max_concurrency / settings.workers),
    exempt=paths.is_probe,
)
_service.add_asgi_middleware(JsonOnly, paths=paths.JSON_API_PATHS)


def _served_model() -> tuple[str, str] | None:
    """(name, version) of the served model for /docs.json, once the instance exists."""
    instance = v2_routes.served()
    if instance is None:
        return None
    name, _, version = instance.model_tag.partition(":")
    return name, version


DEPLOYMENT = Deployment.of(settings)


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    """/docs.json: BentoML's document, corrected (service.openapi) and presented (service.api_document)."""
    served = _served_model()
    corrected = patch_spec(spec, auth=DEPLOYMENT.auth, served=lambda: served)
    return present(corrected, DEPLOYMENT, None if served is None else ":".join(served))


_service.add_asgi_middleware(PatchedOpenAPI, patch=_document)
_service.add_asgi_middleware(DocsPage, page=docs_page)
