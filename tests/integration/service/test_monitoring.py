"""Model monitoring on a served process of its own (no other test's rows in its counts):
every prediction route counts rows outside the training range and fills the input and
prediction histograms, and nothing is lost or left behind when a worker stops: the last
second's rows at a graceful stop, a killed worker's requests in progress.

The last test (a killed worker) needs the service's hooks to call
``metrics.forget_dead_workers()`` at start-up and ``metrics.forget_this_worker()`` at shutdown."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest
from prometheus_client import CollectorRegistry, multiprocess

from tests.integration.conftest import Server, serving, stop_service
from tests.integration.service.test_api import _metric, as_inputs
from tests.v2_cases import json_request

pytestmark = pytest.mark.integration

# seed 004's training ranges: temperature 68..103 °F, rainfall 43..135 mm, humidity 36..71 %
INSIDE = {"temperature": 80.0, "rainfall": 90.0, "humidity": 50.0}
COLD = {"temperature": 40.0, "rainfall": 90.0, "humidity": 50.0}
WET_AND_HUMID = {"temperature": 80.0, "rainfall": 300.0, "humidity": 90.0}


def outside(text: str, feature: str, side: str) -> float:
    """Rows counted outside, over every served version (labels are sorted: version comes last)."""
    prefix = f'crop_yield_rows_outside_training_range_total{{feature="{feature}",side="{side}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


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
    version = server.tag.split(":")[1]
    for name in (
        "input_temperature",
        "input_rainfall",
        "input_humidity",
        "prediction_apples",
        "prediction_oranges",
    ):
        assert f"# TYPE crop_yield_{name} histogram" in text, name
        assert _metric(text, f'crop_yield_{name}_count{{version="{version}"}} ') > 0, name
    # buckets come from the training range: 68..103 °F are bounds of the temperature histogram
    assert f'crop_yield_input_temperature_bucket{{le="68.0",version="{version}"}}' in text
    assert f'crop_yield_input_temperature_bucket{{le="103.0",version="{version}"}}' in text


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


def test_the_rows_of_the_last_second_before_a_shutdown_are_counted(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    """Monitoring flushes once a second, and once more at the worker's shutdown: rows
    predicted just before a SIGTERM still reach the metric files."""
    with serving(trained_home, tmp_path) as running:  # a process of its own: this test stops it
        version = running.tag.split(":")[1]
        rows = [COLD, COLD, WET_AND_HUMID]
        assert httpx.post(f"{running.url}/predict", json={"inputs": rows}).status_code == 200
        stop_service(running.process)  # at once: well within the second before the next flush
    files = tmp_path / "bentoml-home" / "prometheus_multiproc_dir"  # devtools.served.serving_home
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(files))  # type: ignore[no-untyped-call]

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**labels, "version": version})

    assert value("crop_yield_rows_outside_training_range_total", feature="temperature", side="below") == 2
    assert value("crop_yield_rows_outside_training_range_total", feature="rainfall", side="above") == 1
    assert value("crop_yield_rows_outside_training_range_total", feature="humidity", side="above") == 1
    assert value("crop_yield_input_temperature_count") == 3
    assert value("crop_yield_prediction_apples_count") == 3


def in_progress(url: str) -> float:
    """``bentoml_service_request_in_progress`` summed over its series (the scrape is not counted)."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("bentoml_service_request_in_progress{")
    )


def worker_pid(server: Server) -> int:
    (worker,) = [
        child
        for child in psutil.Process(server.process.pid).children(recursive=True)
        if "_bentoml_impl.worker.service" in child.cmdline()
    ]
    return int(worker.pid)


def test_a_killed_workers_requests_in_progress_stop_counting(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    """A worker killed with a request in flight leaves its live gauge behind; its successor
    drops it at start-up. At a graceful stop the worker drops its own."""
    files = tmp_path / "bentoml-home" / "prometheus_multiproc_dir"
    with serving(trained_home, tmp_path) as running:
        killed = worker_pid(running)
        address = urlsplit(running.url)
        with socket.create_connection((address.hostname, address.port)) as held:
            # a request in progress: its headers sent, its body still to come
            held.sendall(
                b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            deadline = time.monotonic() + 5
            while in_progress(running.url) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert in_progress(running.url) == 1
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # BentoML starts another worker
                try:
                    if httpx.get(f"{running.url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        assert worker_pid(running) != killed
        assert (files / f"counter_{killed}.db").is_file(), "the killed worker's counts stay"
        assert not (files / f"gauge_livesum_{killed}.db").exists()
        assert in_progress(running.url) == 0
        stop_service(running.process)
    assert not list(files.glob("gauge_live*")), "a worker stopped gracefully drops its live gauges"


def bin_counts(text: str, kind: str, label: str, column: str) -> dict[int, float]:
    """The drift counters of one column on /metrics: {bin: rows}, over every served version."""
    prefix = f'crop_yield_{kind}_bin_rows_total{{bin="'
    counts: dict[int, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix) and f'{label}="{column}"' in line:
            bin_ = int(line[len(prefix) :].split('"', 1)[0])
            counts[bin_] = counts.get(bin_, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_served_rows_fall_in_the_reference_bins_the_offline_twin_uses(server: Server, tmp_path: Path) -> None:
    """Every bin of every column is on /metrics; rows served through a bulk call (observed
    after its answer) and single-row calls land in the bins ``python -m training.drift``
    puts them in, and the PSI of the counted rows is the offline twin's PSI of the file."""
    import json

    import yaml

    from contract import FEATURE_NAMES, drift
    from contract.metadata import read_metadata
    from tests.helpers import run_training_cli

    name, version = server.tag.split(":")
    entry = yaml.safe_load((server.home / "models" / name / version / "model.yaml").read_text())
    reference = read_metadata(entry["metadata"], server.tag).reference
    assert reference is not None
    before = httpx.get(f"{server.url}/metrics").text
    for feature, column in reference.features.items():
        assert set(bin_counts(before, "input", "feature", feature)) == set(range(len(column.shares)))

    rng = np.random.default_rng(11)
    # whole numbers (exact in float32 and in the CSV), some beyond the training range
    # 10,000 rows: a bulk call observed after its answer, yet every row counted (EXACT_ROWS)
    rows = np.round(rng.uniform([60, 30, 30], [110, 150, 80], size=(10_000, 3)))
    columns = {name: rows[:, j].tolist() for j, name in enumerate(FEATURE_NAMES)}
    assert httpx.post(f"{server.url}/predict_columns", json=columns, timeout=30).status_code == 200
    for row in as_inputs(rows[:5]):  # the few-rows path too
        assert httpx.post(f"{server.url}/predict", json={"inputs": [row]}).status_code == 200
    served = np.vstack([rows, rows[:5]])

    def counted(text: str) -> bool:
        gained = sum(bin_counts(text, "input", "feature", "humidity").values())
        return gained - sum(bin_counts(before, "input", "feature", "humidity").values()) >= len(served)

    after = wait_for_metrics(server, counted)
    csv = tmp_path / "served.csv"
    csv.write_text(",".join(FEATURE_NAMES) + "\n" + "\n".join(",".join(f"{v:g}" for v in r) for r in served))
    offline = run_training_cli(
        [str(csv), "--against", server.tag, "--json"], server.home, module="training.drift"
    )
    assert offline.returncode == 0, offline.stderr
    psi_offline = {c["name"]: c["psi"] for c in json.loads(offline.stdout)["columns"]}
    for j, (feature, column) in enumerate(reference.features.items()):
        b, a = bin_counts(before, "input", "feature", feature), bin_counts(after, "input", "feature", feature)
        live = np.array([a[i] - b[i] for i in range(len(column.shares))])
        np.testing.assert_array_equal(
            live, drift.bin_counts(served[:, j], np.array(column.edges)), err_msg=feature
        )
        assert drift.psi(drift.shares(live), np.array(column.shares)) == pytest.approx(
            psi_offline[feature], abs=1e-12
        )
    for target, column in reference.targets.items():
        b, a = bin_counts(before, "output", "target", target), bin_counts(after, "output", "target", target)
        live = np.array([a[i] - b[i] for i in range(len(column.shares))])
        assert live.sum() == len(served)
        # float32 predictions against the offline float64 ones: a row may cross an edge
        assert drift.psi(drift.shares(live), np.array(column.shares)) == pytest.approx(
            psi_offline[target], abs=0.01
        )
