"""Prediction intervals and extrapolation flags from a served process: /predict,
/predict_columns, the V2 bound outputs and /metadata, against the store entry's metadata."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from contract.metadata import read_metadata
from service.inference.intervals import Intervals
from tests.integration.conftest import Server
from tests.integration.service.test_api import as_inputs, random_rows, stored_weights
from tests.v2_cases import json_request

pytestmark = pytest.mark.integration

BOUNDS = ("apples_lower", "apples_upper", "oranges_lower", "oranges_upper")
# seed 004's training ranges: temperature 68..103 °F, rainfall 43..135 mm, humidity 36..71 %
ROWS = np.array([[73.0, 67.0, 43.0], [40.0, 67.0, 43.0], [80.0, 300.0, 90.0], [68.0, 43.0, 71.0]])
OUTSIDE = [[], ["temperature"], ["rainfall", "humidity"], []]  # the training extremes are inside


def expected_bounds(server: Server, rows: np.ndarray, level: float) -> dict[str, np.ndarray]:
    name, version = server.tag.split(":")
    raw = yaml.safe_load((server.home / "models" / name / version / "model.yaml").read_text())
    metadata = read_metadata(raw["metadata"], server.tag)
    weight, bias = stored_weights(server)
    outputs = rows.astype(np.float32) @ weight.astype(np.float32).T + bias.astype(np.float32)
    return Intervals(metadata.intervals, server.tag).bounds(rows.astype(np.float32), outputs, level)


def test_predict_without_interval_has_flags_and_no_bounds(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", json={"inputs": as_inputs(ROWS)})
    assert response.status_code == 200
    body = response.json()
    assert "interval" not in body
    for prediction, outside in zip(body["predictions"], OUTSIDE, strict=True):
        assert set(prediction) == {"apples", "oranges", "extrapolated", "outside_training_range"}
        assert prediction["outside_training_range"] == outside
        assert prediction["extrapolated"] is bool(outside)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.999])
def test_predict_and_columns_return_the_exact_intervals(server: Server, level: float) -> None:
    rows = np.vstack([ROWS, random_rows(30, seed=4)])
    expected = expected_bounds(server, rows, level)
    answer = httpx.post(f"{server.url}/predict", json={"inputs": as_inputs(rows), "interval": level}).json()
    assert answer["interval"] == level
    for name in BOUNDS:
        got = [prediction[name] for prediction in answer["predictions"]]
        np.testing.assert_allclose(got, expected[name], rtol=1e-6)
    columns = {name: rows[:, j].tolist() for j, name in enumerate(("temperature", "rainfall", "humidity"))}
    bulk = httpx.post(f"{server.url}/predict_columns", json={**columns, "interval": level}).json()
    assert bulk["interval"] == level
    for name in BOUNDS:
        np.testing.assert_allclose(bulk[name], expected[name], rtol=1e-6)
    assert bulk["extrapolated"][: len(ROWS)] == [bool(o) for o in OUTSIDE]
    assert bulk["outside_training_range"]["temperature"][:1] == [1]
    assert bulk["outside_training_range"]["rainfall"][:1] == [2]


def test_columns_without_interval_are_unchanged_but_for_the_flags(server: Server) -> None:
    columns = {name: ROWS[:, j].tolist() for j, name in enumerate(("temperature", "rainfall", "humidity"))}
    body = httpx.post(f"{server.url}/predict_columns", json=columns).json()
    assert set(body) == {"apples", "oranges", "extrapolated", "outside_training_range", "model"}
    assert body["extrapolated"] == [False, True, True, False]
    assert body["outside_training_range"] == {"temperature": [1], "rainfall": [2], "humidity": [2]}


@pytest.mark.parametrize("level", [0.49, 1.0, "high", True])
def test_a_bad_level_is_refused_naming_the_field(server: Server, level: Any) -> None:
    for route, body in (
        ("/predict", {"inputs": as_inputs(ROWS[:1])}),
        ("/predict_columns", {"temperature": [73.0], "rainfall": [67.0], "humidity": [43.0]}),
    ):
        response = httpx.post(f"{server.url}{route}", json={**body, "interval": level})
        assert response.status_code == 400, (route, response.text)
        assert response.json()["detail"][0]["loc"][-1] == "interval"


def test_v2_bound_outputs(server: Server) -> None:
    rows = np.vstack([ROWS, random_rows(10, seed=5)])
    expected = expected_bounds(server, rows, 0.9)
    request = json_request(rows) | {
        "outputs": [{"name": "apples"}, *({"name": name} for name in BOUNDS)],
        "parameters": {"interval": 0.9},
    }
    response = httpx.post(f"{server.url}/v2/models/crop_yield/infer", json=request)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert list(outputs) == ["apples", *BOUNDS]
    for name in BOUNDS:
        assert outputs[name]["datatype"] == "FP32"
        np.testing.assert_allclose(outputs[name]["data"], expected[name].astype(np.float32), rtol=1e-6)
    default_level = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer",
        json=json_request(rows) | {"outputs": [{"name": "oranges_upper"}]},
    ).json()
    np.testing.assert_allclose(
        default_level["outputs"][0]["data"], expected_bounds(server, rows, 0.95)["oranges_upper"], rtol=1e-6
    )
    bad = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer",
        json=json_request(rows) | {"outputs": [{"name": "apples_lower"}], "parameters": {"interval": 2}},
    )
    assert bad.status_code == 400
    assert "parameters.interval must be a confidence level from 0.5 to 0.999" in bad.json()["error"]


def test_metadata_shows_what_the_intervals_rest_on(server: Server) -> None:
    intervals = httpx.get(f"{server.url}/metadata").json()["intervals"]
    assert intervals["rows"] == 15  # seed 004's rows, all used for training
    assert intervals["dof"] == 15 - 4  # intercept + three weights
    assert set(intervals["residual_std"]) == {"apples", "oranges"}
    assert all(0 < std < 5 for std in intervals["residual_std"].values())


def test_v2_extrapolated_output_as_json_and_binary(server: Server) -> None:
    outputs = [{"name": "apples"}, {"name": "extrapolated"}]
    url = f"{server.url}/v2/models/crop_yield/infer"
    answer = httpx.post(url, json=json_request(ROWS) | {"outputs": outputs}).json()
    flags = answer["outputs"][1]
    assert (flags["name"], flags["datatype"], flags["shape"]) == ("extrapolated", "BOOL", [len(ROWS)])
    assert flags["data"] == [bool(o) for o in OUTSIDE]
    binary = [{**output, "parameters": {"binary_data": True}} for output in outputs]
    response = httpx.post(url, json=json_request(ROWS) | {"outputs": binary})
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [4 * len(ROWS), len(ROWS)]
    tail = response.content[length + 4 * len(ROWS) :]
    assert np.frombuffer(tail, dtype=np.bool_).tolist() == [bool(o) for o in OUTSIDE]
