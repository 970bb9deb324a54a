"""Monitoring counts without a server: buckets, out-of-range counts, the bulk histogram
update against prometheus_client's own ``observe``, and the data plane's last flush."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry, Histogram

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import ModelMetadata
from service.inference.dataplane import DataPlane
from service.inference.model import LinearModel
from service.inference.training_range import TrainingBox
from service.observability import monitoring
from service.observability.monitoring import (
    Monitor,
    add_observations,
    bucket_bounds,
    target_ranges,
    training_ranges,
)
from service.settings import Settings
from training.pipeline import TrainOptions, train

FEATURES = [(68.0, 103.0), (43.0, 135.0), (36.0, 71.0)]
WEIGHT = np.array([[0.4, 0.9, 0.6], [-0.2, 0.8, 1.1]])
BIAS = np.array([1.0, -2.0])
TARGETS = [(88.5, 206.3), (51.4, 170.5)]
"""``target_ranges(WEIGHT, BIAS, FEATURES)`` by hand. Apples (all weights positive): lowest
at the box's lowest corner, 0.4·68 + 0.9·43 + 0.6·36 + 1 = 88.5, highest at its highest,
0.4·103 + 0.9·135 + 0.6·71 + 1 = 206.3. Oranges (negative temperature weight): lowest at
(103, 43, 36), -0.2·103 + 0.8·43 + 1.1·36 - 2 = 51.4, highest at (68, 135, 71),
-0.2·68 + 0.8·135 + 1.1·71 - 2 = 170.5."""


def linear_model(tag: str, metadata: ModelMetadata) -> LinearModel:
    """WEIGHT and BIAS on the CPU, with ``metadata``."""
    return LinearModel(
        tag=tag,
        weight=torch.tensor(WEIGHT, dtype=torch.float32),
        bias=torch.tensor(BIAS, dtype=torch.float32),
        device=torch.device("cpu"),
        metadata=metadata,
        created_at="",
    )


@pytest.fixture(scope="module")
def seed_004_metadata() -> ModelMetadata:
    return train(TrainOptions(save=False)).metadata  # seed 004's data: FEATURES are its ranges


def test_bucket_bounds_span_the_training_range_and_half_a_range_either_side() -> None:
    bounds = bucket_bounds(68.0, 103.0)
    assert len(bounds) == 17
    assert np.all(np.diff(bounds) > 0)
    assert (bounds[0], bounds[4], bounds[12], bounds[-1]) == (50.5, 68.0, 103.0, 120.5)


def test_target_ranges_are_the_extremes_over_the_training_box() -> None:
    np.testing.assert_allclose(target_ranges(WEIGHT, BIAS, FEATURES), TARGETS, rtol=1e-12)


def test_each_target_takes_the_corners_its_weight_signs_pick() -> None:
    weight = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    # first target: lowest at (low, high) = 68 - 135 = -67, highest at (high, low) = 103 - 43 = 60
    ranges = target_ranges(weight, np.array([0.0, 5.0]), FEATURES)
    np.testing.assert_allclose(ranges, [(-67.0, 60.0), (5.0, 5.0)], rtol=1e-12)


def test_training_ranges_come_from_the_entry_metadata(seed_004_metadata: ModelMetadata) -> None:
    features, targets = training_ranges(seed_004_metadata, WEIGHT, BIAS)
    assert features == [(68.0, 103.0), (43.0, 135.0), (36.0, 71.0)]
    np.testing.assert_allclose(targets, TARGETS, rtol=1e-12)


def test_observe_counts_rows_outside_the_range_and_fills_buckets() -> None:
    monitor = Monitor(FEATURES, TARGETS, TrainingBox(FEATURES))
    rows = np.array([[68.0, 43.0, 36.0], [67.9, 200.0, 50.0], [110.0, 20.0, 80.0]], dtype=np.float32)
    outputs = np.asarray(rows @ WEIGHT.T + BIAS, dtype=np.float32)
    monitor.observe(rows[:2], outputs[:2])
    monitor.observe(rows[2:], outputs[2:])  # accumulates over calls
    state = monitor.take()
    np.testing.assert_array_equal(state.below, [1, 1, 0])  # 67.9 °F; 20 mm (68.0 is inside)
    np.testing.assert_array_equal(state.above, [1, 1, 1])
    assert state.bucket_counts.sum(axis=1).tolist() == [3] * 5
    np.testing.assert_allclose(state.sums, np.concatenate([rows, outputs], axis=1).sum(axis=0), rtol=1e-6)
    temperature = state.bucket_counts[0]
    assert temperature[4] == 2  # (63.625, 68]: 67.9, and 68.0 itself ("le" is inclusive)
    assert temperature[-1] == 0  # 110 is below the last bound, 120.5
    assert not monitor.take().bucket_counts.any(), "take() empties the accumulators"


def test_bulk_update_equals_prometheus_observe() -> None:
    values = np.random.default_rng(0).uniform(40, 130, 500)
    values[:3] = [68.0, 103.0, 50.5]  # exactly on bounds
    bounds = bucket_bounds(68.0, 103.0)
    registry_a, registry_b = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("h", "h", buckets=[*bounds, float("inf")], registry=registry_a)
    bulk = Histogram("h", "h", buckets=[*bounds, float("inf")], registry=registry_b)
    for value in values:
        one_by_one.observe(value)
    monitor = Monitor([(68.0, 103.0)] * 3, [(68.0, 103.0)] * 2, TrainingBox([(68.0, 103.0)] * 3))
    monitor.observe(np.column_stack([values] * 3), np.column_stack([values] * 2))
    state = monitor.take()
    add_observations(bulk, state.bucket_counts[0], float(state.sums[0]))

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        (metric,) = [m for m in registry.collect() if m.name == "h"]
        return {
            (s.name, s.labels.get("le", "")): s.value
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    expected, got = samples(registry_a), samples(registry_b)
    # the service sums float32 inputs in float64: the same to float32 precision
    assert got.pop(("h_sum", "")) == pytest.approx(expected.pop(("h_sum", "")), rel=1e-6)
    assert got == expected  # every bucket and the count


def test_the_few_rows_path_counts_exactly_as_the_vectorized_one() -> None:
    ranges = TARGETS
    rng = np.random.default_rng(1)
    rows = rng.uniform([40, 0, 0], [130, 200, 100], size=(200, 3)).astype(np.float32)
    rows[:3] = [[68.0, 100.0, 36.0], [103.0, 135.0, 50.0], [50.5, 0.0, 100.0]]  # features on bounds
    outputs = np.asarray(rows @ WEIGHT.T + BIAS, dtype=np.float32)
    box = TrainingBox(FEATURES)
    one_call, row_by_row = Monitor(FEATURES, ranges, box), Monitor(FEATURES, ranges, box)
    one_call.observe(rows, outputs)
    for i in range(len(rows)):
        row_by_row.observe(rows[i : i + 1], outputs[i : i + 1])
    a, b = one_call.take(), row_by_row.take()
    np.testing.assert_array_equal(a.bucket_counts, b.bucket_counts)
    np.testing.assert_array_equal(a.below, b.below)
    np.testing.assert_array_equal(a.above, b.above)
    np.testing.assert_allclose(a.sums, b.sums, rtol=1e-9)


def test_stopping_the_data_plane_flushes_the_rows_of_the_last_second(
    seed_004_metadata: ModelMetadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows predicted after the last once-a-second flush reach the metrics at shutdown."""
    registry = CollectorRegistry()

    class Sink(monitoring.PrometheusSink):  # its own registry; no tick within the test
        def __init__(self, monitor: Monitor, version: str, registry_: Any = None) -> None:
            super().__init__(monitor, version, registry)

        async def run(self, every_s: float = 3600.0) -> None:
            await super().run(every_s)

    monkeypatch.setattr(monitoring, "PrometheusSink", Sink)
    monkeypatch.setattr(monitoring, "FLUSH_EVERY_S", 3600.0)
    model = linear_model("crop_yield:flush", seed_004_metadata)
    plane = DataPlane(Settings(monitoring=True, batching=True))
    plane.load(model)
    cold = np.array([[40.0, 90.0, 50.0], [50.0, 90.0, 50.0]], dtype=np.float32)  # below 68 °F
    wet = np.array([[80.0, 300.0, 50.0]], dtype=np.float32)  # above 135 mm

    def value(name: str, **labels: str) -> Any:
        return registry.get_sample_value(name, {**labels, "version": "flush"})

    async def scenario() -> None:
        plane.start()
        await plane.predict(cold, "predict")  # through the batcher
        await plane.predict(wet, "predict_columns", batch=False)  # straight to the model
        assert value("crop_yield_input_temperature_count") == 0, "nothing flushed before the stop"
        plane.stop()

    asyncio.run(scenario())
    assert value("crop_yield_rows_outside_training_range_total", feature="temperature", side="below") == 2
    assert value("crop_yield_rows_outside_training_range_total", feature="rainfall", side="above") == 1
    assert value("crop_yield_rows_outside_training_range_total", feature="humidity", side="below") is None
    histograms = [f"input_{f}" for f in FEATURE_NAMES] + [f"prediction_{t}" for t in TARGET_NAMES]
    for name in histograms:
        assert value(f"crop_yield_{name}_count") == 3, name
    assert value("crop_yield_input_temperature_sum") == pytest.approx(40 + 50 + 80)
    apples = (np.vstack([cold, wet]) @ WEIGHT.T + BIAS)[:, 0].sum()
    assert value("crop_yield_prediction_apples_sum") == pytest.approx(apples, rel=1e-6)
    plane.stop()  # a second stop adds nothing
    assert value("crop_yield_input_temperature_count") == 3


def test_a_bulk_call_is_observed_after_its_answer_and_a_small_one_before(
    seed_004_metadata: ModelMetadata,
) -> None:
    """Monitoring of a call of DEFER_ROWS rows or more waits for the loop's next turn (the
    handler writes the answer first); smaller calls are counted before they return."""
    model = linear_model("crop_yield:defer", seed_004_metadata)
    plane = DataPlane(Settings(monitoring=True, batching=False))
    plane.load(model)
    monitor = plane.served.default.monitor
    bulk = np.full((monitoring.DEFER_ROWS, 3), 80.0, dtype=np.float32)

    async def scenario() -> tuple[int, int, int]:
        await plane.predict(bulk[:5], "predict")
        small = int(monitor._state.bucket_counts[0].sum())
        await plane.predict(bulk, "predict_columns", batch=False)
        before = int(monitor._state.bucket_counts[0].sum())
        await asyncio.sleep(0)
        return small, before, int(monitor._state.bucket_counts[0].sum())

    assert asyncio.run(scenario()) == (5, 5, 5 + monitoring.DEFER_ROWS)
