"""Ground truth (``POST /feedback``) without a server: the error and coverage arithmetic
(``service.inference.feedback``), its counters (in this process, and aggregated from worker
processes' multiprocess files as ``bentoml serve`` writes them), ``DataPlane.feedback`` (the
rows are not counted as predictions), and the route: validation, versions and refusals,
answered alike by the hot route app and BentoML's API layer."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from contract.metadata import read_metadata
from service.bentoml_internals import api_input_model
from service.http import paths
from service.inference import feedback as ground_truth
from service.inference.dataplane import DataPlane
from service.inference.errors import DataPlaneError, NotReadyError, VersionNotServedError
from service.inference.intervals import Intervals
from service.rest.feedback import feedback_json, feedback_route
from service.rest.feedback_schemas import MAX_YIELD, FeedbackResponse
from service.settings import Settings
from tests.helpers import REPO_ROOT
from tests.unit.service.test_json_api import headers_of, receiver, through_bentoml
from tests.unit.service.test_json_api import wiring as json_api_wiring  # noqa: F401 (a fixture)
from tests.unit.service.test_versions import linear

pytestmark = pytest.mark.unit

OUTPUTS = np.array([[10.0, 20.0], [12.0, 18.0], [14.0, 22.0], [16.0, 24.0]], dtype=np.float32)
ACTUALS = np.array([[11.0, 20.0], [11.0, 21.0], [14.0, 19.0], [20.0, 23.5]])
HALF = {
    0.9: np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 2.0], [3.0, 1.0]]),
    0.95: np.array([[1.5, 1.5], [1.5, 3.0], [1.5, 3.0], [4.0, 1.5]]),
}
"""Some errors lie exactly on a bound (rows 0 and 1's apples at 90%, row 3's at 95%): inside."""

ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
ACTUAL = {"apples": 56.0, "oranges": 70.0}
BODY: dict[str, Any] = {"inputs": [ROW, ROW], "actuals": [ACTUAL, {"apples": 60.0, "oranges": 65.5}]}


def test_errors_are_actual_minus_predicted_and_the_summary_follows() -> None:
    scored = ground_truth.score(OUTPUTS, ACTUALS, HALF, "crop_yield:v7")
    assert scored.version == "v7"
    expected = ACTUALS - OUTPUTS
    np.testing.assert_array_equal(scored.errors, expected)
    assert scored.errors[3, 0] == 4.0  # the actual above the prediction: positive
    assert scored.inside is not None
    assert scored.inside[0.9].tolist() == [[True, True], [True, False], [True, False], [False, True]]
    assert scored.inside[0.95].tolist() == [[True, True]] * 4
    totals = scored.totals
    assert totals.rows == 4
    np.testing.assert_allclose(totals.squared, (expected**2).sum(axis=0))
    np.testing.assert_allclose(totals.absolute, np.abs(expected).sum(axis=0))
    np.testing.assert_allclose(totals.positive, [5.0, 3.0])  # apples +1, +4; oranges +3
    np.testing.assert_allclose(totals.negative, [1.0, 3.5])  # apples −1; oranges −3, −0.5
    assert totals.inside is not None
    assert totals.inside[0.9].tolist() == [3, 2]
    summary = totals.summary()
    assert set(summary) == {"apples", "oranges"}
    for j, target in enumerate(("apples", "oranges")):
        assert summary[target]["rmse"] == pytest.approx(math.sqrt(np.mean(expected[:, j] ** 2)))
        assert summary[target]["mae"] == pytest.approx(np.mean(np.abs(expected[:, j])))
        assert summary[target]["bias"] == pytest.approx(np.mean(expected[:, j]))
    assert summary["apples"]["coverage_90"] == 0.75
    assert summary["oranges"]["coverage_90"] == 0.5
    assert summary["oranges"]["coverage_95"] == 1.0


def test_without_intervals_errors_are_scored_but_no_coverage() -> None:
    scored = ground_truth.score(OUTPUTS, ACTUALS, None, "crop_yield:old")
    assert scored.inside is None
    assert scored.totals.inside is None
    assert set(scored.totals.summary()["apples"]) == {"rmse", "mae", "bias"}
    document = orjson.loads(feedback_json(scored))
    assert all(set(entry) == {"apples", "oranges"} for entry in document["errors"])
    FeedbackResponse.model_validate(document)


def test_half_widths_are_those_of_the_predict_intervals(valid_metadata: dict[str, Any]) -> None:
    metadata = read_metadata(valid_metadata, "crop_yield:v1")
    intervals = Intervals(metadata.intervals, "crop_yield:v1")
    rows = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0], [40.0, 300.0, 90.0]], dtype=np.float32)
    half = ground_truth.half_widths(intervals, rows)
    assert half is not None
    assert set(half) == {0.9, 0.95}
    for level, widths in half.items():
        np.testing.assert_array_equal(widths, intervals.half_widths(rows, level))
    # an actual just inside /predict's bounds is inside; just outside, outside
    outputs = np.full((3, 2), 50.0, dtype=np.float32)
    bounds = intervals.bounds(rows, outputs, 0.95)
    actuals = np.column_stack([bounds["apples_upper"] - 0.01, bounds["oranges_lower"] - 0.01])
    scored = ground_truth.score(outputs, actuals, half, "crop_yield:v1")
    assert scored.inside is not None
    assert scored.inside[0.95].tolist() == [[True, False]] * 3
    assert ground_truth.half_widths(Intervals(None, "crop_yield:v0"), rows) is None


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_call_adds_its_totals_to_the_counters_of_its_version() -> None:
    scored = ground_truth.score(OUTPUTS, ACTUALS, HALF, "crop_yield:unit-counted")
    for _ in range(2):
        ground_truth.count(scored)
    for j, target in enumerate(("apples", "oranges")):
        labels = {"target": target, "version": "unit-counted"}
        assert sample("crop_yield_feedback_rows_total", **labels) == 8
        totals = scored.totals
        assert sample("crop_yield_feedback_squared_error_total", **labels) == pytest.approx(
            2 * totals.squared[j]
        )
        assert sample("crop_yield_feedback_absolute_error_total", **labels) == pytest.approx(
            2 * totals.absolute[j]
        )
        positive = sample("crop_yield_feedback_error_total", **labels, sign="positive")
        negative = sample("crop_yield_feedback_error_total", **labels, sign="negative")
        assert positive - negative == pytest.approx(2 * (ACTUALS - OUTPUTS)[:, j].sum())
        assert min(positive, negative) >= 0  # counters: the signed sum in two halves
        inside = sample("crop_yield_feedback_inside_interval_total", **labels, level="0.95")
        assert inside == 2 * int(scored.inside[0.95][:, j].sum())  # type: ignore[index]
    # no coverage series for a version without intervals
    ground_truth.count(ground_truth.score(OUTPUTS, ACTUALS, None, "crop_yield:unit-old"))
    assert sample("crop_yield_feedback_rows_total", target="apples", version="unit-old") == 4
    labels = {"target": "apples", "version": "unit-old", "level": "0.95"}
    assert REGISTRY.get_sample_value("crop_yield_feedback_inside_interval_total", labels) is None


def test_a_version_starting_exports_its_training_rmse_and_zero_counters(
    valid_metadata: dict[str, Any],
) -> None:
    metadata = read_metadata(valid_metadata, "crop_yield:unit-start")
    ground_truth.export_version(metadata, "unit-start")
    for target in ("apples", "oranges"):
        labels = {"target": target, "version": "unit-start"}
        rmse = REGISTRY.get_sample_value("crop_yield_model_training_rmse", labels)
        assert rmse == metadata.metrics["train"][target].rmse > 0
        assert REGISTRY.get_sample_value("crop_yield_feedback_rows_total", labels) == 0
        assert (
            REGISTRY.get_sample_value("crop_yield_feedback_error_total", {**labels, "sign": "negative"}) == 0
        )
        for level in ("0.9", "0.95"):
            inside = REGISTRY.get_sample_value(
                "crop_yield_feedback_inside_interval_total", {**labels, "level": level}
            )
            assert inside == 0


WORKER = """
import sys
import numpy as np
from service.inference import feedback
from service.observability import metrics
from contract.metadata import read_metadata

assert metrics.writes_files(), "PROMETHEUS_MULTIPROC_DIR was set before prometheus_client was imported"
shift = float(sys.argv[1])
outputs = np.array([[10.0, 20.0], [12.0, 18.0]], dtype=np.float32)
actuals = outputs + np.array([[shift, -shift], [2 * shift, 0.0]])
half = {0.9: np.full((2, 2), 1.5), 0.95: np.full((2, 2), 2.5)}
feedback.count(feedback.score(outputs, actuals, half, "crop_yield:mp"))
metrics.training_rmse().labels(target="apples", version="mp").set(1.25)
"""


def test_worker_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two workers (``bentoml serve`` starts each with PROMETHEUS_MULTIPROC_DIR set) count
    their own feedback; /metrics (``metrics.exposition``) serves the sums."""
    for shift in ("1", "2"):
        subprocess.run(
            [sys.executable, "-c", WORKER, shift],
            cwd=REPO_ROOT,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
            check=True,
        )
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"version": "mp", **labels})

    assert value("crop_yield_feedback_rows_total", target="apples") == 4
    # apples errors: 1, 2 (shift 1) and 2, 4 (shift 2); oranges: −1, 0 and −2, 0
    assert value("crop_yield_feedback_squared_error_total", target="apples") == 1 + 4 + 4 + 16
    assert value("crop_yield_feedback_absolute_error_total", target="oranges") == 3
    assert value("crop_yield_feedback_error_total", target="apples", sign="positive") == 9
    assert value("crop_yield_feedback_error_total", target="oranges", sign="negative") == 3
    assert value("crop_yield_feedback_error_total", target="oranges", sign="positive") == 0
    assert value("crop_yield_feedback_inside_interval_total", target="apples", level="0.9") == 1
    assert value("crop_yield_feedback_inside_interval_total", target="apples", level="0.95") == 3
    # the gauge is the same on every worker; the workers exited without a graceful stop, so
    # their live gauges would be dropped at the next worker's start (forget_dead_workers)
    assert value("crop_yield_model_training_rmse", target="apples") == 1.25


# -- the data plane -------------------------------------------------------------------------


def test_the_plane_scores_without_counting_predictions(
    valid_metadata: dict[str, Any], tmp_path: Path
) -> None:
    """``DataPlane.feedback``: the named version's outputs (the default's otherwise), and none
    of what predictions count: the row counter, the batch sizes, monitoring, the shadow."""

    async def scenario() -> None:
        plane = DataPlane(Settings(monitoring=True, shadow_version="unit-two"))
        plane.load(
            linear("crop_yield:unit-one", 1.0, valid_metadata, tmp_path),
            linear("crop_yield:unit-two", 2.0, valid_metadata, tmp_path),
        )
        plane.start()
        observed: list[int] = []
        offered: list[int] = []
        for loaded in plane.served.versions.values():
            loaded.monitor.observe = lambda rows, outputs: observed.append(len(rows))  # type: ignore[method-assign]
        assert plane.shadow is not None
        plane.shadow.offer = lambda rows, outputs, version: offered.append(len(rows))  # type: ignore[method-assign]
        calls_before = sample("crop_yield_rows_per_model_call_count")
        rows = np.array([[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]], dtype=np.float32)
        actuals = np.array([[11.0, 19.0], [1.0, 2.0]])
        try:
            default = plane.feedback(rows, actuals)
            assert (default.tag, default.errors.tolist()) == (
                "crop_yield:unit-one",
                [[1.0, -1.0], [0.0, 0.0]],
            )
            two = plane.feedback(rows, actuals, "unit-two")
            assert (two.version, two.errors.tolist()) == ("unit-two", [[-9.0, -21.0], [-1.0, -2.0]])
            assert two.inside is not None  # the dry run's metadata records intervals
            with pytest.raises(
                VersionNotServedError, match=r"'unit-three' .* served: 'unit-one', 'unit-two'"
            ):
                plane.feedback(rows, actuals, "unit-three")
            assert (observed, offered) == ([], [])
            assert sample("crop_yield_rows_per_model_call_count") == calls_before
            for version in ("unit-one", "unit-two"):
                assert sample("crop_yield_rows_predicted_total", endpoint="feedback", version=version) == 0
                assert sample("crop_yield_feedback_rows_total", target="apples", version=version) == 2
                assert sample("crop_yield_model_training_rmse", target="oranges", version=version) > 0
            await plane.predict(rows, "predict")  # a prediction is observed and counted, as before
            assert observed == [2]
            assert sample("crop_yield_rows_predicted_total", endpoint="predict", version="unit-one") == 2
        finally:
            plane.stop()

    asyncio.run(scenario())


def test_an_empty_plane_is_not_ready() -> None:
    with pytest.raises(NotReadyError):
        DataPlane(Settings()).feedback(np.zeros((1, 3), np.float32), np.zeros((1, 2)))


# -- the route ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wiring(request: pytest.FixtureRequest) -> ModuleType:
    """``service.service``, imported as test_json_api imports it (its fixture, imported above)."""
    module: ModuleType = request.getfixturevalue("json_api_wiring")
    return module


@dataclass
class StandInPlane:
    """A stand-in for the data plane's ``feedback`` that records its calls; it predicts
    (temperature / 3 + rainfall, humidity × 1.5), as the stand-in of test_json_api does."""

    refusal: DataPlaneError | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    model: Any = field(default_factory=lambda: SimpleNamespace(tag="crop_yield:standin"))

    def feedback(self, rows: np.ndarray, actuals: np.ndarray, version: str | None = None) -> Any:
        self.calls.append((rows.dtype, rows.tolist(), actuals.tolist(), version))
        if self.refusal is not None:
            raise self.refusal
        outputs = np.column_stack([rows[:, 0] / 3 + rows[:, 1], rows[:, 2] * 1.5]).astype(np.float32)
        half = {level: np.full(actuals.shape, level * 20) for level in ground_truth.LEVELS}
        return ground_truth.score(outputs, actuals, half, f"crop_yield:{version or 'standin'}")


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def through_route(
    wiring: ModuleType, plane: StandInPlane, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Answer:
    route = feedback_route(plane, api_input_model(wiring._service, "feedback"))  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/feedback",
        "headers": [(b"content-type", b"application/json"), *headers],
        "query_string": b"",
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await route[("POST", "/feedback")](scope, receiver(body), send)
    return sent[0]["status"], headers_of(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def both(
    wiring: ModuleType, body: Any, refusal: DataPlaneError | None = None
) -> list[tuple[Answer, list[Any]]]:
    """The hot route's and BentoML's answers, each with the calls its plane received."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    answers = []
    plane = StandInPlane(refusal)
    answers.append((asyncio.run(through_route(wiring, plane, raw)), plane.calls))
    plane = StandInPlane(refusal)
    answers.append((asyncio.run(through_bentoml(wiring, plane, "/feedback", raw)), plane.calls))  # type: ignore[arg-type]
    return answers


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        {**BODY, "model_version": "v9", "request_ids": ["a-1", "b/2"]},
        {
            "inputs": [{"temperature": 73, "rainfall": 67, "humidity": 43}],
            "actuals": [{"apples": 0, "oranges": 70}],
        },
    ],
)
def test_the_bentoml_api_body_answers_as_the_hot_route(wiring: ModuleType, body: dict[str, Any]) -> None:
    (route_answer, route_calls), (bentoml_answer, bentoml_calls) = both(wiring, body)
    assert route_answer[0] == 200
    assert bentoml_answer == route_answer
    assert bentoml_calls == route_calls
    ((dtype, rows, actuals, version),) = route_calls
    assert dtype == np.float32
    assert rows == [[r["temperature"], r["rainfall"], r["humidity"]] for r in body["inputs"]]
    assert actuals == [[a["apples"], a["oranges"]] for a in body["actuals"]]
    assert version == body.get("model_version")
    document = orjson.loads(route_answer[2])
    FeedbackResponse.model_validate(document)
    assert (b"x-model-version", document["model_version"].encode()) in route_answer[1]
    assert document["model"] == f"crop_yield:{body.get('model_version', 'standin')}"
    assert document["rows"] == len(body["inputs"])
    for entry, row, actual, request_id in zip(
        document["errors"], body["inputs"], body["actuals"], body.get("request_ids", [None] * 3), strict=False
    ):
        assert entry["apples"] == pytest.approx(
            actual["apples"] - (row["temperature"] / 3 + row["rainfall"]), abs=1e-4
        )
        assert entry["oranges"] == pytest.approx(actual["oranges"] - row["humidity"] * 1.5, abs=1e-4)
        assert set(entry["inside_90"]) == set(entry["inside_95"]) == {"apples", "oranges"}
        assert entry.get("request_id") == request_id
    assert set(document["summary"]["apples"]) == {"rmse", "mae", "bias", "coverage_90", "coverage_95"}


def test_errors_are_written_as_float32_like_the_predictions(wiring: ModuleType) -> None:
    ((answer, _), _) = both(wiring, BODY)
    text = answer[2].decode()
    # 56 − (73 / 3 + 67) in float32, in its shortest form (float64 would print -35.33333587646484)
    assert '"apples":-35.333336,' in text


BAD_ID = "has space"
REJECTED = [
    ({**BODY, "actuals": BODY["actuals"][:1]}, ["actuals"]),
    ({**BODY, "actuals": [*BODY["actuals"], ACTUAL]}, ["actuals"]),
    ({**BODY, "request_ids": ["only-one"]}, ["request_ids"]),
    ({**BODY, "request_ids": ["ok", BAD_ID]}, ["request_ids", 1]),
    ({**BODY, "request_ids": ["ok", "x" * 129]}, ["request_ids", 1]),
    ({"inputs": BODY["inputs"]}, ["actuals"]),
    ({**BODY, "actuals": [ACTUAL, {"apples": "60", "oranges": 1.0}]}, ["actuals", 1, "apples"]),
    ({**BODY, "actuals": [ACTUAL, {"apples": -1.0, "oranges": 1.0}]}, ["actuals", 1, "apples"]),
    ({**BODY, "actuals": [ACTUAL, {"apples": 1.0, "oranges": MAX_YIELD + 1}]}, ["actuals", 1, "oranges"]),
    ({**BODY, "actuals": [ACTUAL, {"apples": 1.0}]}, ["actuals", 1, "oranges"]),
    ({**BODY, "actuals": [ACTUAL, {**ACTUAL, "pears": 3.0}]}, ["actuals", 1, "pears"]),
    ({**BODY, "inputs": [ROW, {**ROW, "humidity": 101.0}]}, ["inputs", 1, "humidity"]),
    ({"inputs": [], "actuals": []}, ["inputs"]),
    ({**BODY, "model_version": ""}, ["model_version"]),
    ({**BODY, "model_version": 3}, ["model_version"]),
    ({**BODY, "extra": 1}, ["extra"]),
    (
        orjson.dumps({"inputs": [ROW]})[:-1] + b', "actuals": [{"apples": NaN, "oranges": 1}]}',
        ["actuals", 0, "apples"],
    ),
    (
        orjson.dumps({"inputs": [ROW]})[:-1] + b', "actuals": [{"apples": 1, "oranges": Infinity}]}',
        ["actuals", 0, "oranges"],
    ),
]


@pytest.mark.parametrize(("body", "loc"), REJECTED)
def test_bad_bodies_get_the_400_of_predict_naming_the_field(
    wiring: ModuleType, body: Any, loc: list[Any]
) -> None:
    (route_answer, route_calls), (bentoml_answer, bentoml_calls) = both(wiring, body)
    assert route_answer[0] == 400
    assert bentoml_answer == route_answer  # byte for byte
    assert route_calls == bentoml_calls == []
    document = orjson.loads(route_answer[2])
    assert document["error"].startswith("1 validation error for ")
    assert [problem["loc"] for problem in document["detail"]] == [loc]


def test_a_length_mismatch_says_what_is_missing(wiring: ModuleType) -> None:
    ((answer, _), _) = both(wiring, {**BODY, "actuals": BODY["actuals"][:1]})
    (problem,) = orjson.loads(answer[2])["detail"]
    assert problem["type"] == "length_mismatch"
    assert problem["msg"] == "actuals has 1 entries for 2 input rows: one per input row, in the same order"


def test_the_version_comes_from_the_body_or_the_header(wiring: ModuleType) -> None:
    def answer(body: dict[str, Any], version: bytes | None) -> tuple[Answer, StandInPlane]:
        plane = StandInPlane()
        headers = () if version is None else ((b"x-model-version", version),)
        return asyncio.run(through_route(wiring, plane, orjson.dumps(body), headers)), plane

    (status, headers, _), plane = answer(BODY, b"v3")
    assert (status, plane.calls[0][3]) == (200, "v3")
    assert (b"x-model-version", b"v3") in headers
    (status, _, _), plane = answer({**BODY, "model_version": "v3"}, b"v3")
    assert (status, plane.calls[0][3]) == (200, "v3")
    (status, _, _), plane = answer(BODY, b"  ")  # blank: the default
    assert (status, plane.calls[0][3]) == (200, None)
    (status, _, body), plane = answer({**BODY, "model_version": "v3"}, b"v4")
    assert (status, plane.calls) == (400, [])
    (problem,) = orjson.loads(body)["detail"]
    assert problem["loc"] == ["model_version"]
    assert "names version 'v3', the x-model-version header 'v4'" in problem["msg"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [({**BODY, "model_version": "gone"}, ["model_version"]), (BODY, ["header", "x-model-version"])],
)
def test_an_unserved_version_is_404_naming_the_served_ones(
    wiring: ModuleType, body: Any, loc: list[str]
) -> None:
    refusal = VersionNotServedError("version 'gone' of model 'crop_yield' is not served here; served: 'v1'")
    (route_answer, _), (bentoml_answer, _) = both(wiring, body, refusal)
    assert route_answer[0] == 404
    assert bentoml_answer == route_answer
    document = orjson.loads(route_answer[2])
    assert document["error"] == "not found"
    assert document["detail"] == [{"type": "not_found", "loc": loc, "msg": str(refusal)}]


def test_not_ready_is_503_with_retry_after(wiring: ModuleType) -> None:
    (route_answer, _), (bentoml_answer, _) = both(wiring, BODY, NotReadyError("the model is still loading"))
    assert route_answer[0] == 503
    assert (b"retry-after", b"1") in route_answer[1]
    assert bentoml_answer == route_answer


def test_the_route_is_a_protected_json_route_with_its_errors_documented() -> None:
    from service.docs.openapi import patch_spec

    assert paths.is_protected("/feedback")
    assert "/feedback" in paths.JSON_API_PATHS  # JSON only (415), request metrics by route
    spec = {"paths": {"/feedback": {"post": {"requestBody": {}, "responses": {}}}}}
    responses = patch_spec(spec, auth=True)["paths"]["/feedback"]["post"]["responses"]
    assert {s for s in responses if int(s) >= 400} == {
        "400",
        "401",
        "404",
        "408",
        "413",
        "415",
        "429",
        "503",
        "504",
    }
    assert "batching queue" not in responses["503"]["description"]  # it never waits in one
