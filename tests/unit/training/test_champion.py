"""Reading the model to compare with: a store entry (session store) or a service (a stub
HTTP server here; tests/integration/training/test_compare_cli.py uses the real one)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from contract import FEATURE_NAMES, TARGET_NAMES
from service.inference.intervals import Intervals
from training.champion import ChampionError, ServiceChampion, StoreChampion, TrainedOn, resolve
from training.compare import COVERAGE_LEVELS
from training.pipeline import TrainOptions, train

ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0], [87.0, 134.0, 58.0]])


def test_a_store_entry_predicts_and_bounds_like_the_service() -> None:
    outcome = train(TrainOptions(model_name="champ-store"))
    champion = resolve("champ-store", None)  # no version: latest
    assert isinstance(champion, StoreChampion)
    assert (champion.tag, champion.source) == (outcome.tag, "store")
    assert champion.data_sha256 == outcome.metadata.data.sha256
    assert champion.trained_on == TrainedOn(15, 15, 0, 0.2)  # the built-in rows, all fitted
    got = champion.predict(ROWS)
    model = outcome.fit.model
    expected = ROWS @ model.weight.double().numpy().T + model.bias.double().numpy()
    np.testing.assert_allclose(got.values, expected, rtol=1e-12)
    assert got.bounds is not None
    intervals = Intervals(outcome.metadata.intervals, "x:y")
    for level in COVERAGE_LEVELS:
        lower, upper = got.bounds[level]
        np.testing.assert_allclose(upper - lower, 2 * intervals.half_widths(ROWS, level), rtol=1e-10)


def _entry(name: str, metadata: dict[str, Any]) -> None:
    import bentoml

    with bentoml.models.create(name, metadata=metadata):
        pass


def test_store_problems_name_the_model() -> None:
    with pytest.raises(ChampionError, match=r"model champ-missing:v9 is not in the model store"):
        resolve("champ-missing:v9", None)
    with pytest.raises(ChampionError, match=r"invalid model tag 'Not A Tag!'.*and not an http"):
        resolve("Not A Tag!", None)
    other = {"features": [{"name": "sunshine"}], "targets": [{"name": "pears"}]}
    _entry("champ-other", other)
    with pytest.raises(ChampionError, match=r"predicts \['pears'\] from \['sunshine'\].*cannot be compared"):
        resolve("champ-other", None)
    _entry("champ-foreign", {"framework": "sklearn"})
    with pytest.raises(ChampionError, match="metadata schema_version None"):
        resolve("champ-foreign", None)


class Stub(BaseHTTPRequestHandler):
    """Answers from the class-level table ``answers``: path -> (status, body)."""

    answers: ClassVar[dict[str, tuple[int, Any]]] = {}
    seen: ClassVar[list[tuple[str, dict[str, str], Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        Stub.seen.append((self.path, dict(self.headers), body))
        status, answer = Stub.answers.get(self.path, (404, {"error": "not found"}))
        if callable(answer):
            answer = answer(body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815 - the names BaseHTTPRequestHandler calls

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Stub.answers, Stub.seen = {}, []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


METADATA = {
    "model": "crop_yield:v7",
    "features": [{"name": n} for n in FEATURE_NAMES],
    "targets": [{"name": n} for n in TARGET_NAMES],
    "intervals": {"rows": 15},
    "training": {
        "data": {"sha256": "abc", "rows": 300, "train_rows": 240, "holdout_rows": 60},
        "seed": 3,
        "hyperparameters": {"holdout_fraction": 0.2},
    },
}


def predictions(body: dict[str, Any]) -> dict[str, Any]:
    """apples = temperature, oranges = rainfall; bounds ± the level."""
    out = []
    for row in body["inputs"]:
        p = {"apples": row["temperature"], "oranges": row["rainfall"]}
        if "interval" in body:
            for t in TARGET_NAMES:
                p[f"{t}_lower"], p[f"{t}_upper"] = p[t] - body["interval"], p[t] + body["interval"]
        out.append(p)
    return {"predictions": out, "model": "crop_yield:v7"}


def test_a_service_is_asked_for_its_default_version(stub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Stub.answers = {"/metadata": (200, METADATA), "/predict": (200, predictions)}
    monkeypatch.setattr("training.champion.ROWS_PER_REQUEST", 2)
    champion = resolve(stub + "/", "s3cret")
    assert isinstance(champion, ServiceChampion)
    assert (champion.tag, champion.source, champion.data_sha256) == ("crop_yield:v7", stub, "abc")
    assert champion.trained_on == TrainedOn(300, 240, 3, 0.2)
    got = champion.predict(ROWS)
    np.testing.assert_array_equal(got.values, ROWS[:, :2])
    assert got.bounds is not None
    np.testing.assert_allclose(got.bounds[0.95][1] - got.bounds[0.95][0], np.full((3, 2), 1.9))
    posts = [(headers, body) for path, headers, body in Stub.seen if path == "/predict"]
    assert [len(body["inputs"]) for _, body in posts] == [2, 2, 1, 1]  # 2 chunks × 2 levels
    assert [body["interval"] for _, body in posts] == [0.9, 0.95, 0.9, 0.95]
    assert all(h["X-Model-Version"] == "v7" for h, _ in posts)  # no canary may answer
    assert all(h["Authorization"] == "Bearer s3cret" for _, h, _ in Stub.seen)


def test_a_service_without_intervals_is_asked_for_predictions_only(stub: str) -> None:
    Stub.answers = {"/metadata": (200, {**METADATA, "intervals": None}), "/predict": (200, predictions)}
    got = resolve(stub, None).predict(ROWS)
    assert got.bounds is None
    assert [body for path, _, body in Stub.seen if path == "/predict"] == [
        {"inputs": [dict(zip(FEATURE_NAMES, row, strict=True)) for row in ROWS.tolist()]}
    ]


@pytest.mark.parametrize(
    "training",
    [
        {"data": {"sha256": "abc"}},
        {"data": {"sha256": "abc", "rows": 300, "train_rows": "240"}, "seed": 3},
        {"data": {"sha256": "abc", "rows": 300, "train_rows": 240}, "seed": 3, "hyperparameters": None},
    ],
)
def test_a_service_that_does_not_say_which_rows_it_was_fitted_on(stub: str, training: Any) -> None:
    """Then same data cannot be scored like for like (the pipeline falls back to out-of-sample)."""
    Stub.answers = {"/metadata": (200, {**METADATA, "training": training})}
    champion = resolve(stub, None)
    assert (champion.data_sha256, champion.trained_on) == ("abc", None)


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"/metadata": (401, {"error": "unauthorized"})}, "answered GET /metadata with 401.*--token"),
        ({"/metadata": (500, b"boom")}, "answered GET /metadata with 500: boom"),
        ({"/metadata": (200, b"<html>")}, "GET /metadata with something that is not JSON"),
        ({"/metadata": (200, {"status": "ok"})}, "not like a crop-yield service"),
        (
            {"/metadata": (200, {**METADATA, "targets": [{"name": "pears"}]})},
            r"crop_yield:v7 predicts \['pears'\].*cannot be compared",
        ),
    ],
)
def test_service_problems_are_named(stub: str, answers: dict[str, Any], message: str) -> None:
    Stub.answers = answers
    with pytest.raises(ChampionError, match=message):
        resolve(stub, None)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((400, {"error": "invalid request"}), "answered POST /predict with 400"),
        ((200, lambda body: {**predictions(body), "model": "crop_yield:v8"}), "from crop_yield:v8, not"),
        ((200, {"predictions": [], "model": "crop_yield:v7"}), "with 0 predictions"),
    ],
)
def test_bad_prediction_answers_are_named(stub: str, answer: tuple[int, Any], message: str) -> None:
    Stub.answers = {"/metadata": (200, METADATA), "/predict": answer}
    champion = resolve(stub, None)
    with pytest.raises(ChampionError, match=message):
        champion.predict(ROWS)


def test_a_service_that_does_not_answer(stub: str) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ChampionError, match=rf"http://127.0.0.1:{port} does not answer GET /metadata"):
        resolve(f"http://127.0.0.1:{port}", None)
