"""Ground truth on a served process of its own (no other test's rows in its counts): two
versions side by side, a bearer token required. ``POST /feedback`` answers each row's error
against the predictions ``/predict`` gives for the same rows (the default version's, or the
one named) and whether the actual lay inside the intervals ``/predict`` returns; ``/metrics``
counts them per target and version, and never as predictions; bad feedback is refused
naming the field, as ``/predict`` refuses."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from contract.metadata import read_metadata
from tests.helpers import run_training_cli
from tests.integration.conftest import Server, serving
from tests.integration.service.test_api import as_inputs, random_rows

pytestmark = pytest.mark.integration

TOKEN = "feedback-test-token"
SECOND = "second"
TARGETS = ("apples", "oranges")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def served(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The trained version (the default) and ``second`` (another seed) beside it, with a token."""
    store = tmp_path_factory.mktemp("feedback-store")
    shutil.copytree(trained_home[0] / "models", store / "models", symlinks=True)
    trained = run_training_cli(["--quiet", "--version", SECOND, "--seed", "5"], store)
    assert trained.returncode == 0, trained.stderr
    default = trained_home[1].split(":", 1)[1]
    with serving(
        (store, trained_home[1]),
        tmp_path_factory.mktemp("feedback"),
        version_policy=f"specific:{default},{SECOND}",
        default_version=default,
        auth_token=TOKEN,
    ) as running:
        yield running


@pytest.fixture
def client(served: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers={"authorization": f"Bearer {TOKEN}"}) as session:
        yield session


def samples(client: httpx.Client) -> Samples:
    """Every /metrics sample by (name, sorted labels)."""
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def added(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(found: Samples, prefix: str) -> float:
    """The sum of every sample whose name starts with ``prefix`` (all labels)."""
    return sum(v for (name, _), v in found.items() if name.startswith(prefix))


def predicted(client: httpx.Client, rows: np.ndarray, version: str | None = None) -> dict[str, np.ndarray]:
    """/predict's answer for ``rows`` with 95% intervals, as columns (apples, apples_lower, ...)."""
    headers = {} if version is None else {"x-model-version": version}
    response = client.post("/predict", json={"inputs": as_inputs(rows), "interval": 0.95}, headers=headers)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return {
        name: np.array([p[name] for p in predictions])
        for name in predictions[0]
        if name != "outside_training_range"
    }


def actuals_around(answer: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Observed yields: the predictions plus noise, every fifth row well above its 95% upper bound,
    none within 0.01 t/ha of a bound (float32 rounding cannot move one across)."""
    rng = np.random.default_rng(seed)
    center = np.column_stack([answer[t] for t in TARGETS])
    upper = np.column_stack([answer[f"{t}_upper"] for t in TARGETS])
    lower = np.column_stack([answer[f"{t}_lower"] for t in TARGETS])
    actuals = center + rng.normal(0.0, 1.0, center.shape)
    actuals[::5] = upper[::5] + 2.0
    near = (np.abs(actuals - upper) < 0.01) | (np.abs(actuals - lower) < 0.01)
    return np.round(np.where(near, center, actuals), 3)


def as_actuals(actuals: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(TARGETS, row, strict=True)) for row in actuals.tolist()]


def test_feedback_is_scored_against_the_predictions_and_counted_apart(
    served: Server, client: httpx.Client
) -> None:
    rows = random_rows(40, seed=21)
    answer = predicted(client, rows)
    actuals = actuals_around(answer, seed=22)
    time.sleep(1.5)  # monitoring reaches /metrics once a second: the /predict call is in
    before = samples(client)
    ids = [f"req-{i}" for i in range(len(rows))]
    body = {"inputs": as_inputs(rows), "actuals": as_actuals(actuals), "request_ids": ids}
    response = client.post("/feedback", json=body)
    assert response.status_code == 200, response.text
    document = response.json()
    default = served.tag.split(":", 1)[1]
    assert (document["model"], document["model_version"], document["rows"]) == (served.tag, default, 40)
    assert response.headers["x-model-version"] == default
    errors = actuals - np.column_stack([answer[t] for t in TARGETS])
    got = np.array([[entry[t] for t in TARGETS] for entry in document["errors"]])
    np.testing.assert_allclose(got, errors, atol=2e-4)
    inside = {
        t: (answer[f"{t}_lower"] <= actuals[:, j]) & (actuals[:, j] <= answer[f"{t}_upper"])
        for j, t in enumerate(TARGETS)
    }
    for i, entry in enumerate(document["errors"]):
        assert entry["request_id"] == ids[i]
        assert entry["inside_95"] == {t: bool(inside[t][i]) for t in TARGETS}, i
        assert entry["inside_90"]["apples"] <= entry["inside_95"]["apples"]  # the narrower interval
    for j, target in enumerate(TARGETS):
        summary = document["summary"][target]
        assert summary["rmse"] == pytest.approx(np.sqrt(np.mean(errors[:, j] ** 2)), abs=1e-3)
        assert summary["mae"] == pytest.approx(np.mean(np.abs(errors[:, j])), abs=1e-3)
        assert summary["bias"] == pytest.approx(np.mean(errors[:, j]), abs=1e-3)
        assert summary["coverage_95"] == pytest.approx(np.mean(inside[target]))
        assert summary["coverage_95"] <= 0.8  # every fifth row was put above its bound

    time.sleep(1.5)  # a flush of monitoring, had the rows reached it
    after = samples(client)
    for j, target in enumerate(TARGETS):
        labels = {"target": target, "version": default}
        assert added(after, before, "crop_yield_feedback_rows_total", **labels) == 40
        squared = added(after, before, "crop_yield_feedback_squared_error_total", **labels)
        assert squared == pytest.approx(np.sum(errors[:, j] ** 2), rel=1e-4)
        absolute = added(after, before, "crop_yield_feedback_absolute_error_total", **labels)
        assert absolute == pytest.approx(np.sum(np.abs(errors[:, j])), rel=1e-4)
        positive = added(after, before, "crop_yield_feedback_error_total", **labels, sign="positive")
        negative = added(after, before, "crop_yield_feedback_error_total", **labels, sign="negative")
        assert positive - negative == pytest.approx(np.sum(errors[:, j]), abs=1e-2)
        inside_95 = added(after, before, "crop_yield_feedback_inside_interval_total", **labels, level="0.95")
        inside_90 = added(after, before, "crop_yield_feedback_inside_interval_total", **labels, level="0.9")
        assert inside_95 == int(inside[target].sum())
        assert 0 < inside_90 <= inside_95
    # not predictions: no rows counted, no model call, nothing in monitoring's histograms
    for prefix in (
        "crop_yield_rows_predicted_total",
        "crop_yield_rows_per_model_call_count",
        "crop_yield_input_temperature_count",
        "crop_yield_prediction_apples_count",
        "crop_yield_rows_outside_training_range_total",
    ):
        assert total(after, prefix) == total(before, prefix), prefix


def test_a_named_version_is_scored_with_its_own_model(served: Server, client: httpx.Client) -> None:
    rows = random_rows(12, seed=23)
    answer = predicted(client, rows, version=SECOND)
    actuals = actuals_around(answer, seed=24)
    before = samples(client)
    body = {"inputs": as_inputs(rows), "actuals": as_actuals(actuals), "model_version": SECOND}
    response = client.post("/feedback", json=body)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["model_version"] == response.headers["x-model-version"] == SECOND
    got = np.array([[entry[t] for t in TARGETS] for entry in document["errors"]])
    np.testing.assert_allclose(got, actuals - np.column_stack([answer[t] for t in TARGETS]), atol=2e-4)
    assert all("request_id" not in entry for entry in document["errors"])
    after = samples(client)
    default = served.tag.split(":", 1)[1]
    for target in TARGETS:
        rows_of = {
            version: added(after, before, "crop_yield_feedback_rows_total", target=target, version=version)
            for version in (default, SECOND)
        }
        assert rows_of == {default: 0, SECOND: 12}
    # the header names the version as well
    header = client.post(
        "/feedback", json={**body, "model_version": None}, headers={"x-model-version": SECOND}
    ).json()
    assert header["errors"] == document["errors"]
    # each served version's training RMSE, from its metadata, for the rules to compare with
    for version in (default, SECOND):
        raw = yaml.safe_load((served.home / "models" / "crop_yield" / version / "model.yaml").read_text())
        metadata = read_metadata(raw["metadata"], f"crop_yield:{version}")
        for target in TARGETS:
            exported = value(after, "crop_yield_model_training_rmse", target=target, version=version)
            assert exported == pytest.approx(metadata.metrics["train"][target].rmse)


ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
ACTUAL = {"apples": 56.0, "oranges": 70.0}


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        ({"inputs": [ROW, ROW], "actuals": [ACTUAL]}, 400, ["actuals"]),
        ({"inputs": [ROW], "actuals": [ACTUAL], "request_ids": ["a", "b"]}, 400, ["request_ids"]),
        ({"inputs": [ROW], "actuals": [{"apples": 56.0}]}, 400, ["actuals", 0, "oranges"]),
        ({"inputs": [ROW], "actuals": [{**ACTUAL, "apples": -3.0}]}, 400, ["actuals", 0, "apples"]),
        ({"inputs": [{**ROW, "humidity": 140.0}], "actuals": [ACTUAL]}, 400, ["inputs", 0, "humidity"]),
        ({"inputs": [], "actuals": []}, 400, ["inputs"]),
        ({"inputs": [ROW], "actuals": [ACTUAL], "model_version": "nope"}, 404, ["model_version"]),
        (
            b'{"inputs": [{"temperature": 73, "rainfall": 67, "humidity": 43}], '
            b'"actuals": [{"apples": NaN, "oranges": 70}]}',
            400,
            ["actuals", 0, "apples"],
        ),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(
    served: Server, client: httpx.Client, body: Any, status: int, loc: list[Any]
) -> None:
    before = samples(client)
    if isinstance(body, bytes):
        response = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/feedback", json=body)
    assert response.status_code == status, response.text
    document = response.json()
    assert [problem["loc"] for problem in document["detail"]] == [loc]
    if status == 404:
        default = served.tag.split(":", 1)[1]
        assert document["detail"][0]["msg"].endswith(f"served: '{default}', '{SECOND}'")
    after = samples(client)
    assert total(after, "crop_yield_feedback_rows_total") == total(before, "crop_yield_feedback_rows_total")


def test_feedback_needs_the_token_json_and_one_version(served: Server, client: httpx.Client) -> None:
    body = {"inputs": [ROW], "actuals": [ACTUAL]}
    refused = httpx.post(f"{served.url}/feedback", json=body)
    assert refused.status_code == 401
    assert refused.json()["detail"][0]["loc"] == ["header", "authorization"]
    csv = client.post("/feedback", content=b"temperature,rainfall\n", headers={"content-type": "text/csv"})
    assert csv.status_code == 415
    both = client.post(
        "/feedback", json={**body, "model_version": SECOND}, headers={"x-model-version": "other"}
    )
    assert both.status_code == 400
    assert both.json()["detail"][0]["loc"] == ["model_version"]
    unknown = client.post("/feedback", json=body, headers={"x-model-version": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["loc"] == ["header", "x-model-version"]
