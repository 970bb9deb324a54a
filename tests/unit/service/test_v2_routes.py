"""The V2 routes in-process (httpx's ASGI transport) with a stand-in for the running service:
readiness before the model is up, route and method errors, the OpenAPI description."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from service.intervals import BOUND_NAMES
from service.openapi import patch_spec
from service.v2 import routes
from service.v2.openapi import v2_openapi
from tests.v2_cases import ONE_ROW


@dataclass
class FakeService:
    ready: bool = True
    model_tag: str = "crop_yield:v1"
    max_bulk_rows: int = 100

    async def predict_rows(self, rows: np.ndarray, endpoint: str) -> np.ndarray:
        assert endpoint == "v2_infer"
        return rows[:, :2] * 2

    def interval_bounds(
        self, rows: np.ndarray, outputs: np.ndarray, level: float | None
    ) -> dict[str, np.ndarray] | None:
        return None if level is None else {name: outputs[:, 0] + level for name in BOUND_NAMES}

    def extrapolated(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows[:, 0] > 100)


class TestClient:
    """Synchronous calls into the ASGI app, no server or socket."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=routes.app)
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
def client() -> TestClient:
    return TestClient()


def test_not_yet_created(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "served", lambda: None)
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()["ready"]) == (503, False)
    assert client.get("/v2/health/live").json() == {"live": True}
    model = client.get("/v2/models/crop_yield/ready")
    assert (model.status_code, model.headers["retry-after"]) == (503, "1")


def test_created_but_not_ready(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "served", lambda: FakeService(ready=False))
    assert client.get("/v2/health/ready").status_code == 503
    model = client.get("/v2/models/crop_yield/versions/v1/ready")
    assert (model.status_code, model.json()) == (503, {"name": "crop_yield", "ready": False})


def test_infer_through_the_service_hook(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "served", lambda: FakeService())
    response = client.post("/v2/models/crop_yield/versions/v1/infer", content=ONE_ROW)  # no Content-Type
    assert response.status_code == 200
    assert [o["data"] for o in response.json()["outputs"]] == [[146.0], [134.0]]


def test_other_paths_and_methods(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "served", lambda: FakeService())
    unknown = client.get("/v2/repository/index")
    assert unknown.status_code == 404
    assert "no V2 route" in unknown.json()["error"]
    wrong = client.get("/v2/models/crop_yield/infer")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert client.delete("/v2/health/live").status_code == 405


def test_openapi_describes_every_route() -> None:
    document = v2_openapi()
    described = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert described == {(op.path, op.method) for op in routes.OPERATIONS}
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["required"] is True
    assert "422" not in infer["responses"]
    assert "InferenceRequest" in document["components"]["schemas"]
    patched = patch_spec({"paths": {}}, auth=True)["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"400", "401", "404", "408", "413", "415", "429", "503", "504"} <= set(patched["responses"])
    error = patched["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/V2Error"}
