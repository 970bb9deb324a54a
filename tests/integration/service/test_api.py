"""The served process: predictions, batching isolation, bulk, metadata, metrics, probes."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from contract import WEIGHTS_FILE, __version__
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

    before = httpx.get(f"{server.url}/metrics").text
    responses = asyncio.run(call_all())
    for rows, response in zip(payloads, responses, strict=True):
        assert response.status_code == 200, response.text
        got = np.array([[p["apples"], p["oranges"]] for p in response.json()["predictions"]])
        np.testing.assert_allclose(got, rows @ weight.T + bias, atol=1e-4, rtol=0)

    after = httpx.get(f"{server.url}/metrics").text
    calls, rows_label = (
        "crop_yield_rows_per_model_call_count ",
        f'crop_yield_rows_predicted_total{{endpoint="predict",version="{server.tag.split(":")[1]}"}} ',
    )
    assert _metric(after, rows_label) - _metric(before, rows_label) == sum(len(p) for p in payloads)
    # Fewer model calls than requests: some calls carried rows of several callers.
    assert _metric(after, calls) - _metric(before, calls) < len(payloads)


def _metric(text: str, prefix: str) -> float:
    """Value of the first /metrics sample line starting with ``prefix`` (0 before any sample)."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


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
    assert meta["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
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
    assert meta["service_version"] == __version__


def test_probes_and_metrics(server: Server) -> None:
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/livez").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    version = server.tag.split(":")[1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    labels = f'default="true",device="{device}",model="crop_yield",version="{version}"'
    assert f"crop_yield_model_info{{{labels}}} 1.0" in metrics
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


def test_json_with_charset_is_accepted(server: Server) -> None:
    body = b'{"inputs":[{"temperature":75,"rainfall":63,"humidity":44}]}'
    response = httpx.post(
        f"{server.url}/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200
