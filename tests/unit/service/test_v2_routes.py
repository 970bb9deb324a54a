"""The V2 routes in-process (httpx's ASGI transport) with a stand-in for the running service:
readiness before the model is up, route and method errors, the OpenAPI description."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from service.docs.openapi import patch_spec
from service.docs.v2_openapi import v2_openapi
from service.inference.control import IndexEntry
from service.inference.dataplane import Prediction
from service.inference.errors import ControlError, DataPlaneError, NotReadyError
from service.inference.intervals import BOUND_NAMES
from service.inference.serving import Serving
from service.inference.training_range import TrainingBox
from service.v2 import repository, routes
from service.v2.operations import OPERATIONS
from tests.v2_cases import ONE_ROW


@dataclass
class FakePlane:
    """A stand-in for the data plane (``service.inference.dataplane.Plane``)."""

    ready: bool = True
    loaded: bool = True
    max_bulk_rows: int = 100
    answering: str = "crop_yield:v1"
    """The model tag the predictions come from."""

    @property
    def model_name(self) -> str:
        if not self.loaded:
            raise NotReadyError("the model is still loading")
        return "crop_yield"

    @property
    def versions(self) -> list[str]:
        return [self.model_version]

    @property
    def model_version(self) -> str:
        return "v1"

    @property
    def serving(self) -> Serving:
        return Serving(
            max_rows=self.max_bulk_rows,
            batching=True,
            max_batched_rows=10,
            max_latency_ms=5,
            workers=2,
            gpu=None,
        )

    def model_of(self, version: str) -> Any:
        return SimpleNamespace(tag=f"crop_yield:{version}")

    async def predict(
        self,
        rows: np.ndarray,
        endpoint: str,
        interval: float | None = None,
        batch: bool = True,
        version: str | None = None,
    ) -> Prediction:
        assert endpoint == "v2_infer"
        outputs = rows[:, :2] * 2
        bounds = None if interval is None else {name: outputs[:, 0] + interval for name in BOUND_NAMES}
        return Prediction(rows, outputs, bounds, interval, TrainingBox([(0, 100)] * 3), self.answering)


@dataclass
class FakeControl:
    """A stand-in for the model control (``service.inference.control.Control``) that records calls."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)
    refusal: DataPlaneError | None = None

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        self.calls.append(("index", str(ready_only)))
        return [IndexEntry("crop_yield", "v1", "READY", "default", True)]

    async def load(self, version: str | None) -> None:
        await self._change("load", version)

    async def unload(self, version: str) -> None:
        await self._change("unload", version)

    async def set_default(self, version: str) -> None:
        await self._change("default", version)

    async def _change(self, action: str, version: str | None) -> None:
        self.calls.append((action, version))
        if self.refusal is not None:
            raise self.refusal


class AppClient:
    """Synchronous calls into the ASGI app, no server or socket."""

    def __init__(self, plane: FakePlane, control: FakeControl | None = None) -> None:
        self.control = control or FakeControl()
        self.app = routes.v2_app(plane, self.control)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(call())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str) -> httpx.Response:
        return self.request("DELETE", path)


@pytest.fixture
def client() -> AppClient:
    return AppClient(FakePlane())


def test_not_yet_loaded() -> None:
    client = AppClient(FakePlane(ready=False, loaded=False))
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()["ready"]) == (503, False)
    assert client.get("/v2/health/live").json() == {"live": True}
    model = client.get("/v2/models/crop_yield/ready")
    assert (model.status_code, model.headers["retry-after"]) == (503, "1")
    assert model.json() == {
        "error": "not ready: the model is still loading; retry after the Retry-After seconds"
    }


def test_loaded_but_not_ready() -> None:
    client = AppClient(FakePlane(ready=False))
    assert client.get("/v2/health/ready").status_code == 503
    model = client.get("/v2/models/crop_yield/versions/v1/ready")
    assert (model.status_code, model.json()) == (503, {"name": "crop_yield", "ready": False})


def test_infer_through_the_data_plane(client: AppClient) -> None:
    response = client.post("/v2/models/crop_yield/versions/v1/infer", content=ONE_ROW)  # no Content-Type
    assert response.status_code == 200
    assert [o["data"] for o in response.json()["outputs"]] == [[146.0], [134.0]]


def test_an_answer_names_the_version_that_produced_it() -> None:
    """From the prediction itself, not from what the plane serves by the time the answer is
    encoded (the two differ once versions can be swapped while a call is in flight)."""
    plane = FakePlane(answering="crop_yield:v0")
    response = AppClient(plane).post("/v2/models/crop_yield/infer", content=ONE_ROW)
    assert response.status_code == 200
    assert response.json()["model_version"] == "v0"
    assert plane.model_version == "v1"


def test_other_paths_and_methods(client: AppClient) -> None:
    unknown = client.get("/v2/no/such/route")
    assert unknown.status_code == 404
    assert "no V2 route" in unknown.json()["error"]
    wrong = client.get("/v2/models/crop_yield/infer")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert client.delete("/v2/health/live").status_code == 405


INFER_PATHS = ["/v2/models/crop_yield/infer", "/v2/models/crop_yield/versions/v1/infer"]


@pytest.mark.parametrize("path", INFER_PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_other_methods_on_infer_get_the_protocols_405(client: AppClient, method: str, path: str) -> None:
    wrong = client.request(method, path)
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert wrong.headers["content-type"] == "application/json"
    if method != "HEAD":
        assert wrong.json() == {"error": f"method not allowed: {method} is not allowed here; use POST"}
    answer = client.post(path, content=ONE_ROW)
    assert answer.status_code == 200
    assert answer.json()["model_name"] == "crop_yield"


def concrete(path: str) -> str:
    return path.replace("{model_name}", "crop_yield").replace("{version}", "v1")


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_each_route_of_the_table_is_answered_by_the_handler_it_names(
    monkeypatch: pytest.MonkeyPatch, op: Any
) -> None:
    called: list[str] = []
    for name in {o.handler for o in OPERATIONS}:
        original = getattr(routes.V2Routes, name)

        async def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
            called.append(_name)
            return await _original(*args)

        monkeypatch.setattr(routes.V2Routes, name, spy)
    body = ONE_ROW if op.handler == "infer" else b'{"parameters": {"version": "v1"}}'
    response = AppClient(FakePlane()).request(op.method, concrete(op.path), content=body)
    assert response.status_code == 200
    assert called == [op.handler]


def test_the_handlers_are_the_tables() -> None:
    """No handler the route table does not name (one would never run)."""
    public = {name for name, value in vars(routes.V2Routes).items() if callable(value) and name[0] != "_"}
    assert public == {op.handler for op in OPERATIONS}


def test_openapi_describes_every_route() -> None:
    document = v2_openapi()
    described = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert described == {(op.path, op.method) for op in OPERATIONS}
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["required"] is True
    assert "422" not in infer["responses"]
    assert "InferenceRequest" in document["components"]["schemas"]
    patched = patch_spec({"paths": {}}, auth=True)["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"400", "401", "404", "408", "413", "415", "429", "503", "504"} <= set(patched["responses"])
    error = patched["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/V2Error"}


def config_body(config: dict[str, Any]) -> bytes:
    """A load's body as tritonclient's load_model(config=...) sends it."""
    return json.dumps({"parameters": {"config": json.dumps(config)}}).encode()


@pytest.mark.parametrize(
    ("body", "header", "version"),
    [
        (b"", None, None),
        (b'{"parameters": {"version": " V2 "}}', None, "v2"),
        (b'{"parameters": {"version": 3}}', None, "3"),  # Triton's versions are numbers
        (b'{"parameters": {"unload_dependents": false}}', "v1", "v1"),  # tritonclient's unload
        (
            b'{"parameters": {"config": "{\\"version_policy\\": {\\"specific\\": {\\"versions\\": [7]}}}"}}',
            None,
            "7",
        ),
        (b'{"parameters": {"config": "{\\"max_batch_size\\": 8}"}}', "v1", None),
    ],
)
def test_the_version_a_repository_call_names(body: bytes, header: str | None, version: str | None) -> None:
    assert repository.version_of(body, header) == version


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "Invalid JSON"),
        (b'{"parameters": {"version": [1]}}', "parameters.version"),
        (b'{"parameters": {"config": "{"}}', "parameters.config is not JSON"),
        (config_body({"version_policy": {"specific": {"versions": [1, 2]}}}), "exactly one version"),
    ],
)
def test_a_repository_call_that_cannot_be_read_says_why(body: bytes, fragment: str) -> None:
    with pytest.raises(repository.BadRepositoryCallError, match=fragment):
        repository.version_of(body, None)


def test_repository_calls_reach_the_control_and_refusals_are_answered() -> None:
    client = AppClient(FakePlane())
    changed = client.post("/v2/repository/models/crop_yield/default", json={"parameters": {"version": "v1"}})
    assert changed.json() == {"name": "crop_yield", "versions": ["v1"], "default": "v1"}
    assert client.control.calls == [("default", "v1")]
    assert client.post("/v2/repository/models/other/load").status_code == 404
    missing = client.post("/v2/repository/models/crop_yield/unload", json={})
    assert missing.status_code == 400
    assert "unload needs parameters.version" in missing.json()["error"]
    client.control.refusal = ControlError("model control is 'none'")
    refused = client.post("/v2/repository/models/crop_yield/load", json={"parameters": {"version": "v1"}})
    assert (refused.status_code, refused.json()["error"]) == (409, "conflict: model control is 'none'")
    listed = client.post("/v2/repository/index", json={"ready": True})
    assert listed.json() == [
        {"name": "crop_yield", "version": "v1", "state": "READY", "reason": "default", "default": True}
    ]
    assert client.post("/v2/repository/index", content=b'{"ready": "x"}').status_code == 400


def test_the_model_configuration_is_tritons() -> None:
    """What perf_analyzer reads: inputs and outputs with Triton's data types, and shapes that
    agree with the metadata's [-1]: the rows are the model's own first dimension
    (max_batch_size 0, dims [-1]); how calls are batched is in the parameters."""
    client = AppClient(FakePlane())
    config = client.get("/v2/models/crop_yield/config").json()
    assert client.get("/v2/models/crop_yield/versions/v1/config").json() == config
    assert (config["name"], config["platform"], config["backend"]) == (
        "crop_yield",
        "pytorch_libtorch",
        "pytorch",
    )
    assert config["max_batch_size"] == 0
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        (name, "TYPE_FP32", [-1]) for name in ("temperature", "rainfall", "humidity")
    ]
    assert [i["shape"] for i in client.get("/v2/models/crop_yield").json()["inputs"]] == [[-1]] * 3
    outputs = {o["name"]: (o["data_type"], o["dims"]) for o in config["output"]}
    assert outputs["apples"] == ("TYPE_FP32", [-1])
    assert outputs["extrapolated"] == ("TYPE_BOOL", [-1])
    assert "dynamic_batching" not in config  # Triton allows it only with max_batch_size above 0
    assert "up to 10 rows share model calls" in config["parameters"]["batching"]["string_value"]
    assert config["parameters"]["max_rows_per_call"] == {"string_value": "100"}
    assert config["instance_group"] == [{"name": "crop_yield", "kind": "KIND_CPU", "count": 2}]
    assert config["parameters"]["model_tag"] == {"string_value": "crop_yield:v1"}
    assert client.get("/v2/models/crop_yield/versions/v9/config").status_code == 404
    assert "model_configuration" in client.get("/v2").json()["extensions"]
