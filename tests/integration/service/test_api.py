"""The served process: predictions, batching isolation, bulk, metadata, metrics, probes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file

from contract import WEIGHTS_FILE
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration


def stored_weights(server: Server) -> tuple[np.ndarray, np.ndarray]:
    name, version = server.tag.split(":")
    state = load_file(str(server.home / "models" / name / version / WEIGHTS_FILE))
    return state["weight"].astype(np.float64), state["bias"].astype(np.float64)


def random_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform([50, 20, 20], [110, 150, 90], size=(n, 3)).round(2)


def as_inputs(rows: np.ndarray) -> list[dict[str, float]]:
    return [{"temperature": t, "rainfall": r, "humidity": h} for t, r, h in rows.tolist()]


def test_predictions_equal_the_stored_linear_map(server: Server) -> None:
    rows = random_rows(50, seed=1)
    response = httpx.post(f"{server.url}/predict", json={"inputs": as_inputs(rows)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == server.tag
    got = np.array([[p["apples"], p["oranges"]] for p in body["predictions"]])
    weight, bias = stored_weights(server)
    np.testing.assert_allclose(got, rows @ weight.T + bias, atol=1e-4, rtol=0)


def test_seed_004_example_region(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/predict", json={"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
    )
    prediction = response.json()["predictions"][0]
    assert prediction["apples"] == pytest.approx(53.80, abs=0.05)
    assert prediction["oranges"] == pytest.approx(66.81, abs=0.05)


def test_concurrent_callers_each_get_their_own_rows(server: Server) -> None:
    # 200 requests at once, each with distinct rows (1 to 5 of them): batching merges them
    # into shared model calls, and every caller must still receive exactly its own rows.
    weight, bias = stored_weights(server)
    payloads = [random_rows(1 + i % 5, seed=1000 + i) for i in range(200)]

    async def call_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"inputs": as_inputs(rows)}) for rows in payloads)
            )

    responses = asyncio.run(call_all())
    for rows, response in zip(payloads, responses, strict=True):
        assert response.status_code == 200, response.text
        got = np.array([[p["apples"], p["oranges"]] for p in response.json()["predictions"]])
        np.testing.assert_allclose(got, rows @ weight.T + bias, atol=1e-4, rtol=0)

    metrics = httpx.get(f"{server.url}/metrics").text
    calls = _metric(metrics, "crop_yield_rows_per_model_call_count ")
    rows_predicted = _metric(metrics, 'crop_yield_rows_predicted_total{endpoint="predict"} ')
    assert rows_predicted >= sum(len(p) for p in payloads)
    assert calls < rows_predicted  # some model calls carried rows of several requests


def _metric(text: str, prefix: str) -> float:
    """Value of the first /metrics sample line starting with ``prefix``."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{prefix} not in /metrics")


def test_bulk_columns_with_100000_rows(server: Server) -> None:
    rows = random_rows(100_000, seed=7)
    body = {
        "temperature": rows[:, 0].tolist(),
        "rainfall": rows[:, 1].tolist(),
        "humidity": rows[:, 2].tolist(),
    }
    response = httpx.post(f"{server.url}/predict_columns", json=body, timeout=60)
    assert response.status_code == 200, response.text[:500]
    out = response.json()
    assert out["model"] == server.tag
    got = np.column_stack([out["apples"], out["oranges"]])
    weight, bias = stored_weights(server)
    np.testing.assert_allclose(got, rows @ weight.T + bias, atol=1e-3, rtol=0)


def test_metadata(server: Server) -> None:
    response = httpx.get(f"{server.url}/metadata")
    assert response.status_code == 200
    meta = response.json()
    assert meta["model"] == server.tag
    assert meta["device"] == "cpu"
    assert [f["name"] for f in meta["features"]] == ["temperature", "rainfall", "humidity"]
    humidity = meta["features"][2]
    assert humidity["unit"] == "%"
    assert (humidity["valid_min"], humidity["valid_max"]) == (0, 100)
    assert (humidity["train_min"], humidity["train_max"]) == (36, 71)
    assert [t["unit"] for t in meta["targets"]] == ["t/ha", "t/ha"]
    assert 0 <= meta["optimality_gap"] <= 1e-4
    assert meta["metrics"]["train"]["apples"]["r2"] > 0.99
    assert meta["training"]["data"]["rows"] == 15
    assert meta["created_at"].startswith("20")
    assert meta["service_version"] == "0.1.0"


def test_probes_and_metrics(server: Server) -> None:
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/livez").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    version = server.tag.split(":")[1]
    assert f'crop_yield_model_info{{device="cpu",model="crop_yield",version="{version}"}} 1.0' in metrics
    assert "crop_yield_rows_per_model_call_bucket" in metrics
    assert "crop_yield_rows_predicted_total" in metrics
    assert "bentoml_service_request_total" in metrics


def test_openapi_documents_the_api(server: Server) -> None:
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert {"/predict", "/predict_columns", "/metadata"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    row = schemas["CropConditions"]
    assert row["additionalProperties"] is False
    humidity = row["properties"]["humidity"]
    assert (humidity["minimum"], humidity["maximum"], humidity["unit"]) == (0, 100, "%")
    assert "relative humidity" in humidity["description"]
    assert row["example"] == {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
    assert httpx.get(f"{server.url}/").status_code == 200  # Swagger UI


BAD_REQUESTS: list[tuple[str, str, Any, list[str]]] = [
    (
        "humidity above 100",
        "/predict",
        {"inputs": [{"temperature": 70, "rainfall": 60, "humidity": 101}]},
        ["inputs", "0", "humidity"],
    ),
    (
        "negative rainfall in row 2",
        "/predict",
        {
            "inputs": [
                {"temperature": 70, "rainfall": 60, "humidity": 40},
                {"temperature": 70, "rainfall": -1, "humidity": 40},
            ]
        },
        ["inputs", "1", "rainfall"],
    ),
    (
        "string number",
        "/predict",
        {"inputs": [{"temperature": "70", "rainfall": 60, "humidity": 40}]},
        ["inputs", "0", "temperature"],
    ),
    (
        "boolean",
        "/predict",
        {"inputs": [{"temperature": True, "rainfall": 60, "humidity": 40}]},
        ["inputs", "0", "temperature"],
    ),
    (
        "null",
        "/predict",
        {"inputs": [{"temperature": None, "rainfall": 60, "humidity": 40}]},
        ["inputs", "0", "temperature"],
    ),
    (
        "missing field",
        "/predict",
        {"inputs": [{"temperature": 70, "rainfall": 60}]},
        ["inputs", "0", "humidity"],
    ),
    (
        "extra field",
        "/predict",
        {"inputs": [{"temperature": 70, "rainfall": 60, "humidity": 40, "wind": 3}]},
        ["inputs", "0", "wind"],
    ),
    ("extra top-level field", "/predict", {"inputs": [], "debug": True}, ["debug"]),
    ("empty inputs", "/predict", {"inputs": []}, ["inputs"]),
    ("no body fields", "/predict", {}, ["inputs"]),
    ("inputs not a list", "/predict", {"inputs": {"temperature": 70}}, ["inputs"]),
    (
        "unequal columns",
        "/predict_columns",
        {"temperature": [70, 71], "rainfall": [60], "humidity": [40, 41]},
        ["differ in length"],
    ),
    (
        "out of range column",
        "/predict_columns",
        {"temperature": [70, 71], "rainfall": [60, 61], "humidity": [40, 400]},
        ["humidity", "row 1"],
    ),
    (
        "empty columns",
        "/predict_columns",
        {"temperature": [], "rainfall": [], "humidity": []},
        ["temperature"],
    ),
]


@pytest.mark.parametrize(("case", "path", "body", "named"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_4xx_naming_the_field(
    server: Server, case: str, path: str, body: Any, named: list[str]
) -> None:
    response = httpx.post(f"{server.url}{path}", json=body)
    assert 400 <= response.status_code < 500, response.text
    text = response.text
    for fragment in named:
        assert fragment in text, text
    assert httpx.get(f"{server.url}/readyz").status_code == 200


@pytest.mark.parametrize(
    ("case", "raw"),
    [
        ("NaN token", b'{"inputs":[{"temperature":NaN,"rainfall":60,"humidity":40}]}'),
        ("Infinity token", b'{"inputs":[{"temperature":70,"rainfall":Infinity,"humidity":40}]}'),
        ("malformed JSON", b'{"inputs":[{"temperature":70,'),
        ("not JSON at all", b"temperature=70"),
    ],
)
def test_malformed_bodies_get_400(server: Server, case: str, raw: bytes) -> None:
    response = httpx.post(f"{server.url}/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_too_many_rows_is_rejected(server: Server) -> None:
    rows = [{"temperature": 70, "rainfall": 60, "humidity": 40}] * 10_001
    response = httpx.post(f"{server.url}/predict", json={"inputs": rows}, timeout=30)
    assert response.status_code == 400
    assert "inputs" in response.text
    assert "10000" in response.text


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_non_json_content_types_get_415(server: Server, content_type: str) -> None:
    body = b'{"inputs":[{"temperature":75,"rainfall":63,"humidity":44}]}'
    for path in ("/predict", "/predict_columns"):
        response = httpx.post(f"{server.url}{path}", content=body, headers={"content-type": content_type})
        assert response.status_code == 415, response.text
        assert response.json()["detail"][0]["loc"] == ["header", "content-type"]
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_json_with_charset_is_accepted(server: Server) -> None:
    body = b'{"inputs":[{"temperature":75,"rainfall":63,"humidity":44}]}'
    response = httpx.post(
        f"{server.url}/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200
