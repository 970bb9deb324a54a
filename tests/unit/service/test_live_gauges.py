"""Live gauges across worker restarts, on real multiprocess files.

Each "worker" is a small Python process in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before it imports prometheus_client, as ``bentoml serve``
does for its workers) with a ``livesum`` gauge like ``bentoml_service_request_in_progress``,
the service's ``livemax`` model-info gauge and a counter; the files are aggregated as
``/metrics`` does (``MultiProcessCollector``). The test process itself stays out of
multiprocess mode.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from service.observability import metrics
from tests.helpers import REPO_ROOT

WORKER = """
import os, sys
from prometheus_client import Counter, Gauge
from service.observability import metrics

in_flight, version = int(sys.argv[1]), sys.argv[2]
Gauge("in_progress", "Requests being answered now", multiprocess_mode="livesum").inc(in_flight)
Counter("answered", "Requests answered").inc(10)
metrics.model_info().labels(model="crop_yield", version=version, device="cpu", default="true").set(1)
print(os.getpid(), flush=True)
for line in sys.stdin:
    if line.strip() == "shutdown":
        metrics.forget_this_worker()
        print("gone", flush=True)
        break
"""


@contextmanager
def worker(directory: Path, in_flight: int, version: str = "v1") -> Iterator[subprocess.Popen[str]]:
    """A worker serving ``version`` and holding ``in_flight`` requests in progress, until
    stopped or killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(in_flight), version],
        cwd=REPO_ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert int(process.stdout.readline()) == process.pid
        yield process
    finally:
        process.kill()
        process.communicate()


def aggregated(directory: Path, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry.get_sample_value(name, labels)


def serving(directory: Path, version: str) -> float | None:
    labels = {"model": "crop_yield", "version": version, "device": "cpu", "default": "true"}
    return aggregated(directory, "crop_yield_model_info", **labels)


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What ``bentoml serve`` hands its workers; set here only for the functions under test."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return tmp_path


def test_a_killed_workers_in_progress_requests_stop_counting_at_the_next_start(multiproc_dir: Path) -> None:
    with worker(multiproc_dir, 3, "old") as killed, worker(multiproc_dir, 1, "new") as running:
        killed.send_signal(signal.SIGKILL)  # no shutdown hook: its gauge files stay behind
        killed.communicate()
        assert aggregated(multiproc_dir, "in_progress") == 4
        assert serving(multiproc_dir, "old") == serving(multiproc_dir, "new") == 1
        assert (multiproc_dir / f"gauge_livemax_{killed.pid}.db").is_file()  # prometheus_client's name
        assert metrics.forget_dead_workers() == [killed.pid]
        assert aggregated(multiproc_dir, "in_progress") == 1  # the running worker's only
        assert serving(multiproc_dir, "old") is None, "the versions it served are gone"
        assert serving(multiproc_dir, "new") == 1
        assert aggregated(multiproc_dir, "answered_total") == 20, "a dead worker's counts stay"
        assert metrics.forget_dead_workers() == []
        assert (multiproc_dir / f"gauge_livesum_{running.pid}.db").is_file()
        assert (multiproc_dir / f"counter_{killed.pid}.db").is_file()


def test_a_worker_stopped_gracefully_drops_its_own_live_gauges(multiproc_dir: Path) -> None:
    with worker(multiproc_dir, 2) as stopped, worker(multiproc_dir, 1):
        assert aggregated(multiproc_dir, "in_progress") == 3
        assert stopped.stdin is not None
        assert stopped.stdout is not None
        stopped.stdin.write("shutdown\n")
        stopped.stdin.flush()
        assert stopped.stdout.readline().strip() == "gone"
        assert aggregated(multiproc_dir, "in_progress") == 1
        assert serving(multiproc_dir, "v1") == 1  # the other worker's
        assert aggregated(multiproc_dir, "answered_total") == 20


def test_outside_multiprocess_mode_there_is_nothing_to_forget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics.forget_dead_workers() == []
    metrics.forget_this_worker()


def test_workers_restarted_together_both_start_when_one_forgets_first(
    multiproc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers killed at once are restarted at once: both find the dead pids' files, and
    the second's removal finds them gone. Its start must go on."""
    with worker(multiproc_dir, 3) as killed:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    original = multiprocess.mark_process_dead

    def too_late(pid: int, path: str | None = None) -> None:
        original(pid, path)  # the other worker removes the files between this one's glob and remove
        raise FileNotFoundError(2, "No such file or directory", f"gauge_livesum_{pid}.db")

    monkeypatch.setattr(multiprocess, "mark_process_dead", too_late)
    assert metrics.forget_dead_workers() == [killed.pid]
    assert aggregated(multiproc_dir, "in_progress") in (None, 0)
