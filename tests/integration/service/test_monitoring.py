"""Model monitoring on a served process of its own (no other test's rows in its counts):
every prediction route counts rows outside the training range and fills the input and
prediction histograms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Server, serving
from tests.integration.service.test_api import _metric, as_inputs
from tests.v2_cases import json_request

pytestmark = pytest.mark.integration

# seed 004's training ranges: temperature 68..103 °F, rainfall 43..135 mm, humidity 36..71 %
INSIDE = {"temperature": 80.0, "rainfall": 90.0, "humidity": 50.0}
COLD = {"temperature": 40.0, "rainfall": 90.0, "humidity": 50.0}
WET_AND_HUMID = {"temperature": 80.0, "rainfall": 300.0, "humidity": 90.0}


def outside(text: str, feature: str, side: str) -> float:
    return _metric(
        text, f'crop_yield_rows_outside_training_range_total{{feature="{feature}",side="{side}"}} '
    )


def wait_for_metrics(server: Server, ready: object) -> str:
    """/metrics once ``ready(text)`` holds (counts reach Prometheus within a second)."""
    deadline = time.monotonic() + 5
    while True:
        text = httpx.get(f"{server.url}/metrics").text
        if ready(text) or time.monotonic() > deadline:  # type: ignore[operator]
            return text
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(trained_home, tmp_path_factory.mktemp("monitored")) as running:
        yield running


def test_every_route_counts_rows_outside_the_training_range(server: Server) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    rows = [INSIDE, COLD, WET_AND_HUMID]
    assert httpx.post(f"{server.url}/predict", json={"inputs": rows}).status_code == 200
    columns = {name: [row[name] for row in rows] for name in INSIDE}
    assert httpx.post(f"{server.url}/predict_columns", json=columns).status_code == 200
    matrix = np.array([[row[name] for name in INSIDE] for row in rows])
    v2 = httpx.post(f"{server.url}/v2/models/crop_yield/infer", json=json_request(matrix))
    assert v2.status_code == 200

    def counted(text: str) -> bool:
        return outside(text, "humidity", "above") - outside(before, "humidity", "above") >= 3

    after = wait_for_metrics(server, counted)
    assert outside(after, "temperature", "below") - outside(before, "temperature", "below") == 3
    assert outside(after, "rainfall", "above") - outside(before, "rainfall", "above") == 3
    assert outside(after, "humidity", "above") - outside(before, "humidity", "above") == 3
    assert outside(after, "temperature", "above") == outside(before, "temperature", "above")


def test_input_and_prediction_histograms(server: Server) -> None:
    httpx.post(f"{server.url}/predict", json={"inputs": [INSIDE]})
    text = wait_for_metrics(server, lambda t: "crop_yield_prediction_oranges_count" in t)
    for name in (
        "input_temperature",
        "input_rainfall",
        "input_humidity",
        "prediction_apples",
        "prediction_oranges",
    ):
        assert f"# TYPE crop_yield_{name} histogram" in text, name
        assert _metric(text, f"crop_yield_{name}_count ") > 0, name
    # buckets come from the training range: 68..103 °F are bounds of the temperature histogram
    assert 'crop_yield_input_temperature_bucket{le="68.0"}' in text
    assert 'crop_yield_input_temperature_bucket{le="103.0"}' in text


def test_the_metric_counts_exactly_the_rows_flagged_extrapolated(server: Server) -> None:
    # values on, just inside and just outside the training extremes (68 and 103 °F, ...)
    rng = np.random.default_rng(9)
    rows = rng.choice(
        [[67.99, 42.99, 35.99], [68.0, 43.0, 36.0], [103.0, 135.0, 71.0], [103.01, 135.01, 71.01]], 200
    )
    rows[:, 1] = rng.permutation(rows[:, 1])
    before = httpx.get(f"{server.url}/metrics").text
    flagged = dict.fromkeys(INSIDE, 0)
    predictions = httpx.post(f"{server.url}/predict", json={"inputs": as_inputs(rows[:100])}).json()
    for prediction in predictions["predictions"]:
        for feature in prediction["outside_training_range"]:
            flagged[feature] += 1
    columns = {name: rows[100:, j].tolist() for j, name in enumerate(INSIDE)}
    bulk = httpx.post(f"{server.url}/predict_columns", json=columns).json()
    for feature, indexes in bulk["outside_training_range"].items():
        flagged[feature] += len(indexes)
    assert 0 < sum(flagged.values()) < 3 * len(rows)

    def delta(text: str, feature: str) -> float:
        return sum(
            outside(text, feature, side) - outside(before, feature, side) for side in ("below", "above")
        )

    after = wait_for_metrics(server, lambda text: all(delta(text, f) >= n for f, n in flagged.items()))
    assert {feature: delta(after, feature) for feature in INSIDE} == flagged
