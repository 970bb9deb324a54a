"""What the service relies on of BentoML's private internals (``service.bentoml_internals``)
and of its defaults, pinned: after a BentoML upgrade, this file names what moved."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from contract import store_home
from service.bentoml_internals import VALIDATION_LOGGER, CorkDispatcher
from service.inference.batching import RowBatcher
from service.inference.errors import OverloadedError
from service.rest.schemas import CropConditions, predict_request_model


def test_dispatcher_constructor_takes_what_row_batcher_passes() -> None:
    parameters = inspect.signature(CorkDispatcher.__init__).parameters
    for name in ("max_latency_in_ms", "max_batch_size", "fallback", "get_batch_size", "batch_dim"):
        assert name in parameters, (
            f"CorkDispatcher no longer takes {name!r}: update service/inference/batching.py"
        )


def test_dispatcher_merges_concurrent_calls_and_splits_results_per_caller() -> None:
    batches: list[int] = []

    async def callback(parts: list[np.ndarray]) -> list[np.ndarray]:
        batches.append(sum(len(p) for p in parts))
        return [p * 2 for p in parts]

    async def scenario() -> list[np.ndarray]:
        dispatcher: CorkDispatcher[np.ndarray, np.ndarray] = CorkDispatcher(
            max_latency_in_ms=5000,
            max_batch_size=100,
            fallback=lambda: None,
            get_batch_size=lambda rows: int(rows.shape[0]),
            batch_dim=(0, 0),
        )
        call = dispatcher(callback)
        try:
            return await asyncio.gather(*(call(np.full((2, 3), i)) for i in range(20)))  # type: ignore[arg-type]
        finally:
            dispatcher.shutdown()

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, np.full((2, 3), 2 * i))
    assert sum(batches) == 40
    assert len(batches) < 20, "the dispatcher no longer merges concurrent calls"


def test_shed_calls_end_in_the_fallback() -> None:
    """Rows that would wait longer than the latency limit are shed by the dispatcher, which
    then calls ``fallback``: RowBatcher's raises OverloadedError (answered 503, Retry-After)."""

    def slow_model(rows: np.ndarray) -> np.ndarray:
        time.sleep(0.01)  # 10 ms a call against a 5 ms latency limit: the queue cannot keep up
        return rows[:, :2]

    async def scenario() -> list[np.ndarray | BaseException]:
        batcher = RowBatcher(slow_model, max_batch_size=2, max_latency_ms=5)
        try:
            calls = (batcher(np.ones((1, 3), np.float32)) for _ in range(200))
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            batcher.shutdown()

    results = asyncio.run(scenario())
    shed = [r for r in results if isinstance(r, BaseException)]
    assert shed, "the dispatcher no longer sheds rows that wait too long"
    assert all(isinstance(r, OverloadedError) for r in shed), {type(r) for r in shed}
    assert any(isinstance(r, np.ndarray) for r in results)


def test_the_validation_logger_is_the_one_bentoml_logs_rejected_bodies_on() -> None:
    http_app = importlib.import_module(VALIDATION_LOGGER)
    assert isinstance(http_app.logger, logging.Logger)
    assert http_app.logger.name == VALIDATION_LOGGER
    app_module = importlib.import_module("_bentoml_impl.server.app")
    assert app_module.log_exception is http_app.log_exception, "BentoML logs rejected bodies elsewhere now"


def test_store_home_is_where_bentoml_keeps_its_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer

    # The process's BentoML home (tests/conftest.py points BENTOML_HOME at a temporary folder)
    assert Path(BentoMLContainer.bentoml_home.get()) == store_home()
    monkeypatch.delenv("BENTOML_HOME")
    assert store_home() == Path.home() / "bentoml"  # BentoML's documented default


def test_the_api_input_model_is_the_model_bentoml_validates_with() -> None:
    from service.bentoml_internals import api_input_model
    from service.rest.schemas import PredictRequestBase

    @bentoml.service
    class Probe:
        @bentoml.api(input_spec=predict_request_model(3))
        async def predict(
            self, inputs: list[CropConditions], interval: float | None = None
        ) -> dict[str, int]:
            return {}

    model = api_input_model(Probe, "predict")
    assert issubclass(model, PredictRequestBase)
    row = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
    assert model.model_validate_json(orjson.dumps({"inputs": [row]})).inputs[0].rainfall == 67.0
    with pytest.raises(ValidationError) as raised:
        model.model_validate_json(b'{"inputs": [{"temperature": 1}]}')
    assert {e["loc"][-1] for e in raised.value.errors()} == {"rainfall", "humidity"}
    assert raised.value.title == "PredictRequestIODescriptor"  # the title BentoML's 400 names


def test_bentomls_tracing_and_timeout_middleware_are_left_off_the_stack() -> None:
    """BentoML's app factory still adds its OpenTelemetry and timeout middleware where the
    filter looks for them, and the filtered list keeps every other middleware in order."""
    import inspect

    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.server.base_app import BaseAppFactory
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    from service.bentoml_internals import drop_bentoml_middleware

    original = ServiceAppFactory.middlewares
    # The classes' source as BentoML ships it (the property may be the service's filter by now).
    assert "OpenTelemetryMiddleware" in inspect.getsource(ServiceAppFactory), "BentoML moved it"
    assert "TimeoutMiddleware" in inspect.getsource(BaseAppFactory), "BentoML moved it"

    class Other:
        def __init__(self, app: Any) -> None:
            self.app = app

    stack = [
        Middleware(Other),
        Middleware(OpenTelemetryMiddleware),
        Middleware(TimeoutMiddleware),
        Middleware(Other),
    ]
    try:
        ServiceAppFactory.middlewares = property(lambda self: stack)  # type: ignore[method-assign,assignment]
        drop_bentoml_middleware()
        drop_bentoml_middleware()  # idempotent
        assert [m.cls for m in ServiceAppFactory.middlewares.fget(None)] == [Other, Other]  # type: ignore[attr-defined]
    finally:
        ServiceAppFactory.middlewares = original  # type: ignore[method-assign]
