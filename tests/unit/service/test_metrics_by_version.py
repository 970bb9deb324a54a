"""Series labelled with the model version that answered, for versions served side by side:
monitoring sinks with a bucket layout per version (on real multiprocess files, as
``bentoml serve`` writes them, and outside that mode), and gRPC calls timed by version.
HTTP requests by version: test_request_metrics.py; the model-info gauge of a killed worker:
test_live_gauges.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from contract import FEATURE_NAMES
from service.grpc import inference_pb2 as pb
from service.grpc.layers import observed
from service.inference.training_range import TrainingBox
from service.observability import metrics
from service.observability.monitoring import Monitor, PrometheusSink, target_ranges
from tests.helpers import REPO_ROOT

WEIGHT = np.array([[0.4, 0.9, 0.6], [-0.2, 0.8, 1.1]])
BIAS = np.array([1.0, -2.0])
LAYOUTS = {
    "abc123": [(68.0, 103.0), (50.0, 135.0), (36.0, 71.0)],
    "def456": [(50.0, 90.0), (80.0, 200.0), (30.0, 60.0)],  # another version's: other buckets
}
"""Feature ranges per version, with every bucket bound, the targets' too, at 0 or above: the
OpenMetrics check below refuses a ``_sum`` beside negative buckets (the Prometheus text
format that /metrics serves has no such rule)."""


def monitor_of(features: list[tuple[float, float]]) -> Monitor:
    return Monitor(features, target_ranges(WEIGHT, BIAS, features), TrainingBox(features))


def traffic(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Model calls of a few rows (the plain-Python path) and of many (the vectorised one)."""
    rng = np.random.default_rng(seed)
    calls = []
    for n in (1, 3, 200):
        rows = rng.uniform([30, 20, 10], [130, 250, 100], size=(n, 3)).astype(np.float32)
        calls.append((rows, np.asarray(rows @ WEIGHT.T + BIAS, dtype=np.float32)))
    return calls


def expected(version: str, seeds: tuple[int, ...]) -> Any:
    """What the version's calls add up to, by the same Monitor in this process."""
    monitor = monitor_of(LAYOUTS[version])
    for seed in seeds:
        for rows, outputs in traffic(seed):
            monitor.observe(rows, outputs)
    return monitor, monitor.take()


WORKER = """
from prometheus_client import REGISTRY
from service.observability import metrics
from tests.unit.service.test_metrics_by_version import monitor_of, traffic, LAYOUTS

from service.observability.monitoring import PrometheusSink

assert metrics.writes_files(), "PROMETHEUS_MULTIPROC_DIR was set before prometheus_client was imported"

old_a = PrometheusSink(monitor_of(LAYOUTS["abc123"]), "abc123")
b = PrometheusSink(monitor_of(LAYOUTS["def456"]), "def456")
for rows, outputs in traffic(1):
    old_a.monitor.observe(rows, outputs)
for rows, outputs in traffic(2):
    b.monitor.observe(rows, outputs)
b.flush()
# abc123 reloaded: its new sink starts before the old one's last flush
new_a = PrometheusSink(monitor_of(LAYOUTS["abc123"]), "abc123")
for rows, outputs in traffic(3):
    new_a.monitor.observe(rows, outputs)
new_a.flush()
old_a.flush()
assert not any(m.name.startswith("crop_yield_") for m in REGISTRY.collect()), "nothing registered"
"""


@pytest.fixture(scope="module")
def worker_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker process's multiprocess files: it starts with ``PROMETHEUS_MULTIPROC_DIR`` set,
    as ``bentoml serve`` starts its workers, and serves two versions (one of them twice)."""
    directory = tmp_path_factory.mktemp("multiproc")
    subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=REPO_ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
    )
    return directory


def aggregated(directory: Path) -> CollectorRegistry:
    """What /metrics serves in multiprocess mode (``metrics.exposition``)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def test_the_test_process_is_not_in_multiprocess_mode() -> None:
    assert not metrics.writes_files()  # the sinks here use private registries


def test_each_version_reaches_metrics_with_its_own_buckets(worker_files: Path) -> None:
    registry = aggregated(worker_files)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    seeds = {"abc123": (1, 3), "def456": (2,)}  # abc123: its old sink's calls and its new one's
    for version, version_seeds in seeds.items():
        monitor, state = expected(version, version_seeds)
        for column, name in enumerate(monitor.names):
            family = families[f"crop_yield_{name}"]
            assert family.type == "histogram"
            assert text.count(f"# TYPE crop_yield_{name} histogram") == 1, "one family for all versions"
            samples = [s for s in family.samples if s.labels["version"] == version]
            buckets = [(s.labels["le"], s.value) for s in samples if s.name.endswith("_bucket")]
            bounds = [float(le) for le, _ in buckets]
            assert bounds == [*monitor.bounds[column].tolist(), float("inf")], (version, name)
            counts = [value for _, value in buckets]
            assert counts == np.cumsum(state.bucket_counts[column]).tolist(), (version, name)
            (count,) = [s.value for s in samples if s.name.endswith("_count")]
            (total,) = [s.value for s in samples if s.name.endswith("_sum")]
            assert count == counts[-1] == sum(len(rows) for s in version_seeds for rows, _ in traffic(s))
            assert total == pytest.approx(state.sums[column], rel=1e-9)
        for j, feature in enumerate(FEATURE_NAMES):
            for side, outside in (("below", state.below), ("above", state.above)):
                labels = {"feature": feature, "side": side, "version": version}
                got = registry.get_sample_value("crop_yield_rows_outside_training_range_total", labels)
                assert (got or 0) == outside[j], labels
    # prometheus_client's OpenMetrics parser checks every histogram: buckets in order and
    # cumulative, ending in +Inf, _count equal to the +Inf bucket (one version at a time)
    list(
        openmetrics_parser.text_string_to_metric_families(
            openmetrics_exposition.generate_latest(registry).decode()
        )
    )


def test_sinks_of_two_versions_in_one_process_do_not_collide() -> None:
    """Outside multiprocess mode each version's series live in a registry of their own."""
    a = PrometheusSink(monitor_of(LAYOUTS["abc123"]), "private-a")
    b = PrometheusSink(monitor_of(LAYOUTS["def456"]), "private-b")
    assert a.registry is not b.registry
    assert REGISTRY not in (a.registry, b.registry)
    for sink, seed in ((a, 1), (b, 2)):
        for rows, outputs in traffic(seed):
            sink.monitor.observe(rows, outputs)
        sink.flush()
    for sink, version, layout in ((a, "private-a", "abc123"), (b, "private-b", "def456")):
        low = LAYOUTS[layout][0][0]
        labels = {"version": version, "le": repr(low)}
        assert sink.registry.get_sample_value("crop_yield_input_temperature_bucket", labels) is not None
        assert (
            sink.registry.get_sample_value("crop_yield_input_temperature_count", {"version": version}) == 204
        )


def test_sinks_of_one_version_share_its_series() -> None:
    """A reloaded version's new sink adds to the old one's counts (in multiprocess mode two
    objects of one series would each write their own total: see the worker above)."""
    old = PrometheusSink(monitor_of(LAYOUTS["abc123"]), "shared")
    new = PrometheusSink(monitor_of(LAYOUTS["abc123"]), "shared")
    assert new.histograms == old.histograms
    assert new.registry is old.registry
    for sink, seed in ((old, 1), (new, 2)):
        for rows, outputs in traffic(seed):
            sink.monitor.observe(rows, outputs)
    new.flush()
    old.flush()
    assert old.registry.get_sample_value("crop_yield_input_rainfall_count", {"version": "shared"}) == 2 * 204


def test_a_sink_given_a_registry_registers_there() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(monitor_of(LAYOUTS["def456"]), "given", registry)
    sink.monitor.observe(*traffic(4)[0])
    sink.flush()
    assert sink.registry is registry
    assert registry.get_sample_value("crop_yield_prediction_apples_count", {"version": "given"}) == 1


class Context:
    """What ``observed`` reads of a grpc.aio servicer context."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def code(self) -> grpc.StatusCode | None:
        return None

    def time_remaining(self) -> float | None:
        return None


def timed(method: str) -> dict[str, float]:
    """``crop_yield_grpc_request_duration_seconds_count`` of ``method``, by version."""
    counts: dict[str, float] = defaultdict(float)
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == "crop_yield_grpc_request_duration_seconds_count" and s.labels["method"] == method:
                counts[s.labels["version"]] += s.value
    return dict(counts)


def call_all(wrapped: Any, times: int) -> None:
    async def scenario() -> None:
        for _ in range(times):
            with contextlib.suppress(ValueError):
                await wrapped(object(), Context())

    asyncio.run(scenario())


def test_grpc_calls_are_timed_by_the_version_of_their_answer() -> None:
    answers = iter(
        [
            pb.ModelInferResponse(model_name="crop_yield", model_version="abc123"),
            pb.ModelInferResponse(model_name="crop_yield", model_version="def456"),
            pb.ModelInferResponse(model_name="crop_yield", model_version="abc123"),
            pb.ServerLiveResponse(live=True),  # no version in the answer
            ValueError("refused before any version answered"),
        ]
    )

    async def behaviour(request: Any, context: Any) -> Any:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wrapped = observed(behaviour, "/test", "VersionedInfer", timeout=5)
    assert timed("VersionedInfer") == {"": 0}  # bound when the server is built
    call_all(wrapped, 5)
    assert timed("VersionedInfer") == {"": 2, "abc123": 2, "def456": 1}


def test_grpc_versions_cannot_grow_the_series_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_VERSIONS", 2)
    versions = iter(["cap-a", "cap-b", "cap-c", "cap-a"])

    async def behaviour(request: Any, context: Any) -> Any:
        return pb.ModelInferResponse(model_version=next(versions))

    call_all(observed(behaviour, "/test", "CappedInfer", timeout=5), 4)
    # "" and the first version have series of their own; the rest count as "other"
    assert timed("CappedInfer") == {"": 0, "cap-a": 2, metrics.OTHER_VERSION: 2}


def test_layouts_differ() -> None:
    """The premise of the multiprocess test: the two versions' buckets are not the same."""
    a, b = (monitor_of(features).bounds for features in LAYOUTS.values())
    assert all(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert min(bounds[0] for bounds in (*a, *b)) >= 0
