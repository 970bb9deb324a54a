"""The wiring: the BentoML service that puts the layers together (the only module that
imports them all).

``POST /predict``, ``POST /predict_columns`` and ``POST /feedback`` (``service.rest``),
``GET /metadata``, the Open Inference Protocol under ``/v2`` (``service.v2``), the API document
and docs page (``service.docs``), behind the guards of ``service.http``, all over one data plane
(``service.inference.dataplane``). BentoML provides ``/livez`` and ``/readyz``; ``/metrics`` is
``service.http.request_metrics``'s.

Serve with ``python -m service`` (reads the settings, then runs ``bentoml serve``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import bentoml
from starlette.responses import Response

from service.bentoml_internals import api_input_model, drop_bentoml_middleware
from service.docs.asgi import DocsPage, PatchedOpenAPI
from service.docs.document import Deployment, docs_page, present
from service.docs.openapi import patch_spec
from service.grpc.server import GrpcServer, inference_handler
from service.grpc.servicer import InferenceServicer
from service.http import paths
from service.http.guards import BearerAuth, JsonOnly, UnroutableV2Paths
from service.http.hot_paths import HotPaths
from service.http.payloads import PayloadLogging
from service.http.request_metrics import METRICS_PATH, RequestMetrics, metrics_endpoint
from service.http.traffic import RequestContext, RequestGate
from service.inference import preflight
from service.inference.admission import MemoryBudget, Slots
from service.inference.control import ModelControl
from service.inference.dataplane import DataPlane
from service.inference.device import resolve_device, wants_gpu
from service.inference.errors import ModelLoadError
from service.inference.store import served_entries
from service.inference.versions import PolicyError
from service.observability import deferred, logs, metrics, runtime
from service.observability.payloads import PayloadLog
from service.observability.statistics import STATISTICS
from service.observability.tracing import Tracer
from service.rest import feedback as feedback_api
from service.rest import handlers
from service.rest.asgi import json_api
from service.rest.feedback_schemas import FeedbackResponse, feedback_request_model
from service.rest.metadata import metadata_app
from service.rest.schemas import (
    ColumnsResponse,
    PredictResponse,
    columns_request_model,
    predict_request_model,
)
from service.settings import MODEL_VERSION_HEADER, get_settings
from service.v2.routes import v2_app

settings = get_settings()
log = logging.getLogger("crop_yield.service")
PredictRequest = predict_request_model(settings.max_rows_per_request)
ColumnsRequest = columns_request_model(settings.max_bulk_rows)
FeedbackRequest = feedback_request_model(settings.max_rows_per_request)
# BentoML 1.4's OpenTelemetry and timeout middleware are left off the stack: traces and the
# request deadline are the service's own (service.observability.tracing, service.http.traffic).
# Every URL stays excluded from BentoML's tracing too, in case its middleware comes back.
TRACING_EXCLUDED = [".*"]
drop_bentoml_middleware()
SERVICE_NAME = "crop_yield"
# Here too, not only in the worker's start-up hook: BentoML's serving process (which
# imports this module) then logs in the same format as the workers.
logs.configure(settings.log_format)

# Empty until the worker loads the model (CropYieldService.__init__): building it is cheap.
plane = DataPlane(settings)
# How the served versions change while serving (service.inference.control).
control = ModelControl(settings, plane, lambda entry, device: _load_entry(entry, device))
# Admission, one of each per worker for HTTP and gRPC alike (service.inference.admission).
slots = Slots(math.ceil(settings.max_concurrency / settings.workers))
# Unlimited until the worker has started and knows its resting memory (_start_runtime).
memory_budget = MemoryBudget(None, settings.memory_wait)
# Payload logging (service.observability.payloads): None when off; its deliveries start per worker.
payload_log = PayloadLog.from_settings(settings)
# W3C trace context on every request; spans for a sample (service.observability.tracing).
tracer = Tracer.from_environment(settings.trace_ratio, SERVICE_NAME)


@bentoml.asgi_app(metadata_app(plane), path="/")
@bentoml.service(
    name=SERVICE_NAME,
    workers=settings.workers,
    # The request timeout and concurrency limit are the service's own (service.http.traffic):
    # BentoML's timeout middleware is left off the stack (drop_bentoml_middleware), its limit unset.
    traffic={"timeout": settings.request_timeout},
    logging={"access": {"enabled": settings.access_log}},
    # Request metrics and /metrics are the service's own (service.http.request_metrics).
    metrics={"enabled": False},
    tracing={"excluded_urls": TRACING_EXCLUDED},
    resources={"gpu": 1} if wants_gpu(settings.device) else {"cpu": "1"},
)
class CropYieldService:
    # What `bentoml build` packages (a bento carries this one version unless its bentofile
    # lists more); the worker itself loads what the version policy selects (__init__).
    model_ref = bentoml.models.BentoModel(settings.model_tag)

    def __init__(self) -> None:
        # torch only here, in the worker: bentoml serve's own process imports this module too
        import torch

        from service.inference.model import LinearModel

        torch.set_num_threads(1)  # one small matmul per call: threads only add overhead
        device = resolve_device(settings.device)
        try:
            entries, default = served_entries(settings)  # the version policy over the store
        except PolicyError as exc:
            raise ModelLoadError(str(exc)) from None
        models = [LinearModel.from_store(stored, device) for stored in entries]
        first = next(m for m in models if m.tag.partition(":")[2] == default)
        self.plane = plane
        plane.load(first, *(m for m in models if m is not first))
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: GrpcServer | None = None

    @bentoml.on_deployment
    def _preflight() -> None:
        """In ``bentoml serve``'s own process, before any worker: stop with one line and
        status 2 when the model cannot be served (see service.inference.preflight)."""
        preflight.exit_on_problem(settings)

    @bentoml.on_startup
    async def _start_runtime(self) -> None:
        metrics.forget_dead_workers()  # the live gauges of a killed worker this one replaces
        runtime.quiet_validation_errors()
        logs.configure(settings.log_format)
        runtime.freeze_startup_heap()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(runtime.collect_periodically()))
        self.plane.start()
        self._tasks.append(loop.create_task(control.run()))
        if payload_log is not None:
            payload_log.start()
        tracer.start()
        limit = (
            runtime.container_memory_limit()
            if settings.memory_limit_mb is None
            else settings.memory_limit_mb << 20
        )
        memory_budget.budget_bytes = runtime.memory_budget(limit, settings.workers, runtime.resident_bytes())
        metrics.memory_budget().set(memory_budget.budget_bytes or 0)
        if settings.grpc_port:
            token = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
            handler = inference_handler(
                InferenceServicer(self.plane, control),
                slots,
                memory_budget,
                token,
                settings.request_timeout,
                settings.version_sticky_header,
                payload_log,
                tracer,
            )
            self._grpc = GrpcServer(
                self.plane,
                handler,
                settings.grpc_address,
                settings.max_body_bytes,
                reuse_port=settings.workers > 1,
            )
            await self._grpc.start()
        _on_termination(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        """SIGTERM: both transports at once. Readiness flips (``/readyz``, ``/v2/health/ready``,
        gRPC health and ServerReady) and gRPC stops taking calls while uvicorn, whose own
        handler runs next, stops taking connections; calls in flight on either get the same
        CROP_YIELD_GRACEFUL_SHUTDOWN_TIMEOUT from now. (gRPC's stop used to wait for the
        shutdown hook, which runs only once HTTP has drained, doubling the deadline.)"""
        log.info(
            "shutting down: not ready from now; calls in flight get %d s", settings.graceful_shutdown_timeout
        )
        self.plane.ready = False
        if self._grpc is not None:
            self._grpc.begin_shutdown(settings.graceful_shutdown_timeout)

    @bentoml.on_shutdown
    async def _stop_runtime(self) -> None:
        if self._grpc is not None:  # begun at SIGTERM; ends within the same deadline
            await self._grpc.stop(settings.graceful_shutdown_timeout)
        if payload_log is not None:  # both transports have drained: flush what they logged
            await payload_log.close()
        tracer.shutdown()
        for task in self._tasks:
            task.cancel()
        self.plane.stop()
        STATISTICS.flush()
        deferred.flush_all()  # the last second's counts, before this worker's live gauges go
        metrics.forget_this_worker()

    async def __is_ready__(self) -> bool:
        """/readyz: the model is loaded, the warm-up prediction passed, the runtime started."""
        return self.plane.ready

    # The declarations describe the JSON API's routes in /docs.json and to BentoML's client and
    # `bentoml build`. While served, their requests are answered ahead of BentoML's router
    # (service.http.hot_paths → service.rest.asgi) by the same handler each body calls, on
    # the request rebuilt from the fields BentoML validated and passes (the bodies answer
    # only in-process calls; tests/unit/service/test_json_api.py holds the two to one answer).
    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, ctx: bentoml.Context, **request: Any) -> Response:
        """Predict apple and orange yields for each region, in order, with a flag for
        inputs outside the training range and, when asked for, prediction intervals and
        explanations (each input's contribution: the linear model's exact Shapley values).

        Rows of concurrent calls are merged into one model call (adaptive batching).
        """
        version = handlers.asked_version(ctx.request.headers.get(MODEL_VERSION_HEADER))
        return _answered(
            ctx, await handlers.predict(self.plane, PredictRequest.model_construct(**request), version)
        )

    @bentoml.api(route="/predict_columns", input_spec=ColumnsRequest, output_spec=ColumnsResponse)
    async def predict_columns(self, ctx: bentoml.Context, **request: Any) -> Response:
        """Bulk prediction from columns (up to the configured maximum rows), validated as
        arrays; with a column of outside-training-range flags and, when asked for, intervals."""
        version = handlers.asked_version(ctx.request.headers.get(MODEL_VERSION_HEADER))
        answer = await handlers.predict_columns(
            self.plane, ColumnsRequest.model_construct(**request), version
        )
        return _answered(ctx, answer)

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    async def feedback(self, ctx: bentoml.Context, **request: Any) -> Response:
        """Report the yields observed for rows predicted earlier: the same model version
        predicts them again and answers each row's error (actual − predicted, t/ha) and whether
        the actual lay inside the 90% and 95% prediction intervals, with a summary per target.

        The rows are counted in the crop_yield_feedback_* metrics (live RMSE, MAE, bias and
        interval coverage per version), never as predictions.
        """
        version = handlers.asked_version(ctx.request.headers.get(MODEL_VERSION_HEADER))
        answer = await feedback_api.feedback(self.plane, FeedbackRequest.model_construct(**request), version)
        return _answered(ctx, answer)


# Outermost first: request metrics, request id and deadline, authentication (headers only), unroutable V2
# paths, the body and concurrency gate, payload logging (when on), the media type, the hot routes
# (the JSON API's predictions, the V2 routes and /metrics, answered by their own apps), then the OpenAPI
# document and docs page; everything else reaches BentoML's router.
# The decorators turned the class into a bentoml Service (untyped).
_service: Any = CropYieldService
_service.add_asgi_middleware(
    RequestMetrics, service_name=SERVICE_NAME, routes=tuple(sorted(paths.JSON_API_PATHS))
)
_service.add_asgi_middleware(
    RequestContext,
    timeout=settings.request_timeout,
    sticky_header=settings.version_sticky_header,
    tracer=tracer,
)
if settings.auth_token is not None:
    _service.add_asgi_middleware(
        BearerAuth, token=settings.auth_token.get_secret_value(), protects=paths.is_protected
    )
_service.add_asgi_middleware(UnroutableV2Paths)
_service.add_asgi_middleware(
    RequestGate,
    max_bytes=settings.max_body_bytes,
    body_timeout=settings.body_timeout,
    min_rate=settings.body_min_rate,
    rate_grace=settings.body_rate_grace,
    slots=slots,
    exempt=paths.is_probe,
    budget=memory_budget,
)
if payload_log is not None:  # the prediction routes' calls, with their bodies as the gate read them
    _service.add_asgi_middleware(PayloadLogging, log=payload_log)
_service.add_asgi_middleware(JsonOnly, paths=paths.JSON_API_PATHS)
# The hot routes leave here for their front end's own app (service.http.hot_paths).
json_routes = json_api(
    plane, api_input_model(_service, "predict"), api_input_model(_service, "predict_columns")
)
_service.add_asgi_middleware(
    HotPaths,
    routes={
        **json_routes,
        **feedback_api.feedback_route(plane, api_input_model(_service, "feedback")),
        ("GET", METRICS_PATH): metrics_endpoint,
    },
    tree=v2_app(plane, control),
    claims=paths.is_v2,
)

DEPLOYMENT = Deployment.of(settings)


def _answered(ctx: bentoml.Context, response: Response) -> Response:
    """BentoML gives a body's ``Response`` the status of ``ctx.response`` (it takes a ``ctx``
    for the X-Model-Version header): the handler's status is kept by setting it there."""
    ctx.response.status_code = response.status_code
    return response


def _load_entry(entry: Any, device: Any) -> Any:
    """``LinearModel.from_store``, imported in the worker only (torch)."""
    from service.inference.model import LinearModel

    return LinearModel.from_store(entry, device)


def _on_termination(begin: Callable[[], None]) -> None:
    """Run ``begin`` on this worker's event loop when SIGTERM or SIGINT arrives, then the
    handler that was there (uvicorn's, which starts draining HTTP)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (a test's in-process server)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(begin)
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:  # the default action: end the process, as before
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(sig, handler)


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    """/docs.json: BentoML's document, corrected (service.docs.openapi) and presented
    (service.docs.document), with the served model's name and version once it is loaded."""
    served = (plane.model_name, plane.model_version) if plane.ready else None
    corrected = patch_spec(spec, auth=DEPLOYMENT.auth, served=lambda: served)
    return present(corrected, DEPLOYMENT, None if served is None else ":".join(served))


_service.add_asgi_middleware(PatchedOpenAPI, patch=_document)
_service.add_asgi_middleware(DocsPage, page=docs_page)
