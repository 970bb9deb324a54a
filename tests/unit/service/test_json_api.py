"""The JSON API answers alike through its two callers, without a server.

While the service is served, ``POST /predict`` and ``POST /predict_columns`` are answered by
the route apps of ``service.rest.asgi`` (``service.http.hot_paths`` hands requests to them
ahead of BentoML's router); the ``@bentoml.api`` bodies of ``service.service`` answer only
calls through BentoML's own API layer. Both must give the same answer for the same body, so
each body here goes through both: the route app, and BentoML's API layer in-process
(``ServiceAppFactory.api_endpoint_wrapper``, private to BentoML 1.4.39 like the rest of
``service.bentoml_internals``) calling the service's real ``@bentoml.api`` method on an
instance that skips ``__init__`` (which loads the model), both over one stand-in data plane.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.requests import Request

from service.bentoml_internals import api_input_model
from service.http import paths
from service.http.hot_paths import HotPaths
from service.inference.dataplane import Prediction
from service.inference.errors import DataPlaneError, NotReadyError, OverloadedError
from service.inference.explain import Explainer
from service.inference.intervals import BOUND_NAMES
from service.inference.training_range import TrainingBox
from service.rest.asgi import JsonRoute, json_api
from service.rest.schemas import PredictResponse
from service.v2.routes import V2App

ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
OUTSIDE = {"temperature": 99.5, "rainfall": 250.0, "humidity": 43.0}
"""Outside the stand-in's training range in rainfall."""


@dataclass
class StandInPlane:
    """A stand-in for the data plane (``service.inference.dataplane.Plane``) that records
    what each call handed it."""

    refusal: DataPlaneError | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    model: Any = field(default_factory=lambda: SimpleNamespace(tag="crop_yield:standin"))
    explainer: Explainer | None = None
    """What its predictions explain with (None: like a model without training means)."""

    async def predict(
        self,
        rows: np.ndarray,
        endpoint: str,
        interval: float | None = None,
        batch: bool = True,
        version: str | None = None,
    ) -> Prediction:
        self.calls.append((rows.dtype, rows.tolist(), endpoint, interval, batch, version))
        if self.refusal is not None:
            raise self.refusal
        outputs = np.column_stack([rows[:, 0] / 3 + rows[:, 1], rows[:, 2] * 1.5]).astype(np.float32)
        bounds = (
            None
            if interval is None
            else {
                name: outputs[:, i // 2] + (interval if i % 2 else -interval)
                for i, name in enumerate(BOUND_NAMES)
            }
        )
        box = TrainingBox([(0, 100), (0, 200), (0, 100)])
        return Prediction(rows, outputs, bounds, interval, box, self.model.tag, self.explainer)


@pytest.fixture(scope="module")
def wiring() -> ModuleType:
    """``service.service``, imported here (its import configures the project's logger)."""
    own = logging.getLogger("crop_yield")
    level = own.level
    with warnings.catch_warnings():
        # pyproject.toml's filters, which `pytest -W error` overrides: BentoML's first import
        # and its service declaration warn (see filterwarnings there)
        warnings.filterwarnings("ignore", "GitWildMatchPattern", DeprecationWarning)
        warnings.filterwarnings("ignore", "The `__get_pydantic_core_schema__` method", DeprecationWarning)
        from service import service

    own.setLevel(level)
    return service


def receiver(body: bytes) -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def scope_of(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""Status, headers (but BentoML's ``server``, which names itself), body."""


def headers_of(raw: Any) -> list[tuple[bytes, bytes]]:
    return sorted((bytes(k), bytes(v)) for k, v in raw if k != b"server")


async def through_route_app(wiring: ModuleType, plane: StandInPlane, path: str, body: bytes) -> Answer:
    service = wiring._service
    routes = json_api(
        plane,  # type: ignore[arg-type]
        api_input_model(service, "predict"),
        api_input_model(service, "predict_columns"),
    )
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await routes[("POST", path)](scope_of(path), receiver(body), send)
    return sent[0]["status"], headers_of(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def through_bentoml(wiring: ModuleType, plane: StandInPlane, path: str, body: bytes) -> Answer:
    from _bentoml_impl.server.app import ServiceAppFactory

    service = wiring._service
    factory = ServiceAppFactory(
        service,
        is_main=True,
        enable_metrics=False,
        services={service.name: service.config},
        enable_access_control=False,
        access_control_options={},
    )
    instance = object.__new__(service.inner)  # the service class, without its __init__
    instance.plane = plane
    factory._service_instance = instance
    request = Request(scope_of(path), receiver(body))
    with service.context.in_request(request), warnings.catch_warnings():
        # BentoML 1.4.39 reads ``model_fields`` off the validated instance, which pydantic
        # 2.11+ warns about (and pytest makes an error, which BentoML would answer 500)
        warnings.filterwarnings("ignore", "Accessing the 'model_fields' attribute", DeprecationWarning)
        response = await factory.api_endpoint_wrapper(path.lstrip("/"), request)
    return response.status_code, headers_of(response.raw_headers), bytes(response.body)


def both(
    wiring: ModuleType,
    path: str,
    body: Any,
    refusal: DataPlaneError | None = None,
    explainer: Explainer | None = None,
) -> list[Any]:
    """The route app's and BentoML's answers, each with the calls its plane received."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    answers = []
    for call in (through_route_app, through_bentoml):
        plane = StandInPlane(refusal, explainer=explainer)
        answers.append((asyncio.run(call(wiring, plane, path, raw)), plane.calls))
    return answers


PREDICTIONS = [
    ("/predict", {"inputs": [ROW]}),
    ("/predict", {"inputs": [ROW, OUTSIDE, ROW], "interval": 0.9}),
    ("/predict_columns", {name: [ROW[name]] for name in ROW}),
    ("/predict_columns", {**{name: [ROW[name], OUTSIDE[name]] for name in ROW}, "interval": 0.8}),
]


@pytest.mark.parametrize(("path", "body"), PREDICTIONS)
def test_the_bentoml_api_bodies_answer_as_the_hot_routes(wiring: ModuleType, path: str, body: Any) -> None:
    (route_answer, route_calls), (bentoml_answer, bentoml_calls) = both(wiring, path, body)
    assert route_answer[0] == 200
    assert (b"content-type", b"application/json") in route_answer[1]
    assert bentoml_answer == route_answer
    assert bentoml_calls == route_calls
    assert len(route_calls) == 1
    document = orjson.loads(route_answer[2])
    assert document["model"] == "crop_yield:standin"
    assert ("interval" in document) is ("interval" in body)


EXPLAINER = Explainer(
    np.array([[1 / 3, 1.0, 0.0], [0.0, 0.0, 1.5]]), np.zeros(2), np.array([80.0, 90.0, 50.0])
)
"""Explains the stand-in's linear map exactly."""


def test_explanations_are_answered_alike(wiring: ModuleType) -> None:
    body = {"inputs": [ROW, OUTSIDE], "explain": True}
    (route_answer, _), (bentoml_answer, _) = both(wiring, "/predict", body, explainer=EXPLAINER)
    assert route_answer[0] == 200
    assert bentoml_answer == route_answer
    response = PredictResponse.model_validate_json(route_answer[2])
    assert response.base_values is not None
    for prediction in response.predictions:
        assert prediction.contributions is not None
        for target in ("apples", "oranges"):
            parts = getattr(prediction.contributions, target).model_dump().values()
            base = getattr(response.base_values, target)
            assert base + sum(parts) == pytest.approx(getattr(prediction, target), rel=1e-5)
    unexplained = both(wiring, "/predict", {"inputs": [ROW], "explain": False}, explainer=EXPLAINER)
    assert unexplained[0][0] == unexplained[1][0] == both(wiring, "/predict", {"inputs": [ROW]})[0][0]


def test_a_model_without_training_means_refuses_explain_alike(wiring: ModuleType) -> None:
    (route_answer, _), (bentoml_answer, _) = both(wiring, "/predict", {"inputs": [ROW], "explain": True})
    assert route_answer[0] == 400
    assert bentoml_answer == route_answer
    detail = orjson.loads(route_answer[2])["detail"]
    assert detail[0]["loc"] == ["explain"]
    assert "no training means recorded" in detail[0]["msg"]
    assert (b"x-model-version", b"standin") in route_answer[1]


@pytest.mark.parametrize("refusal", [OverloadedError("busy"), NotReadyError("loading")])
@pytest.mark.parametrize("path", ["/predict", "/predict_columns"])
def test_refusals_are_answered_alike(wiring: ModuleType, path: str, refusal: DataPlaneError) -> None:
    body = {"inputs": [ROW]} if path == "/predict" else {name: [ROW[name]] for name in ROW}
    (route_answer, _), (bentoml_answer, _) = both(wiring, path, body, refusal)
    assert route_answer[0] == 503
    assert (b"retry-after", b"1") in route_answer[1]
    assert bentoml_answer == route_answer


REJECTED = [
    ("/predict", b""),
    ("/predict", b"not json"),
    ("/predict", []),
    ("/predict", {"inputs": []}),
    ("/predict", {"inputs": [{"temperature": 73.0}]}),
    ("/predict", {"inputs": [{**ROW, "rainfall": "67"}]}),
    ("/predict", {"inputs": [ROW], "interval": 1.5}),
    ("/predict", {"inputs": [ROW], "extra": 1}),
    ("/predict", {"inputs": [ROW], "explain": "yes"}),
    ("/predict", {"inputs": [ROW], "explain": 1}),
    ("/predict_columns", {"temperature": [73.0], "rainfall": [67.0]}),
    ("/predict_columns", {"temperature": [73.0, 74.0], "rainfall": [67.0], "humidity": [43.0]}),
    ("/predict_columns", {**{name: [ROW[name]] for name in ROW}, "humidity": [400.0]}),
]


@pytest.mark.parametrize(("path", "body"), REJECTED)
def test_rejected_bodies_get_bentomls_400(wiring: ModuleType, path: str, body: Any) -> None:
    (route_answer, route_calls), (bentoml_answer, bentoml_calls) = both(wiring, path, body)
    assert route_answer[0] == 400
    assert (b"content-type", b"application/json") in route_answer[1]
    assert bentoml_answer == route_answer  # byte for byte
    assert route_calls == bentoml_calls == []


def test_the_service_hands_its_hot_routes_to_these_apps(wiring: ModuleType) -> None:
    """The hot routes validate with BentoML's input models (so 400s are BentoML's), and
    every /v2 path goes to the V2 app by the one rule the guards and error table use."""
    service = wiring._service
    options = next(options for cls, options in service.middlewares if cls is HotPaths)
    assert options["claims"] is paths.is_v2
    assert isinstance(options["tree"], V2App)
    hot = {key: app for key, app in options["routes"].items() if key[1] in paths.JSON_API_PATHS}
    assert set(hot) == {("POST", path) for path in paths.JSON_API_PATHS}
    for (_, path), app in hot.items():
        assert isinstance(app, JsonRoute)
        assert (app.path, app.spec) == (path, api_input_model(service, path.lstrip("/")))
