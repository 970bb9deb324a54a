"""Monitoring counts without a server: buckets, out-of-range counts, and the bulk histogram
update against prometheus_client's own ``observe``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from service.inference.training_range import TrainingBox
from service.observability.monitoring import (
    Monitor,
    add_observations,
    bucket_bounds,
    target_ranges,
    training_ranges,
)
from training.pipeline import TrainOptions, train

FEATURES = [(68.0, 103.0), (43.0, 135.0), (36.0, 71.0)]
WEIGHT = np.array([[0.4, 0.9, 0.6], [-0.2, 0.8, 1.1]])
BIAS = np.array([1.0, -2.0])


def test_bucket_bounds_span_the_training_range_and_half_a_range_either_side() -> None:
    bounds = bucket_bounds(68.0, 103.0)
    assert len(bounds) == 17
    assert np.all(np.diff(bounds) > 0)
    assert (bounds[0], bounds[4], bounds[12], bounds[-1]) == (50.5, 68.0, 103.0, 120.5)


def test_target_ranges_are_the_extremes_over_the_training_box() -> None:
    grid = np.array(list(itertools.product(*(np.linspace(lo, hi, 9) for lo, hi in FEATURES))))
    predictions = grid @ WEIGHT.T + BIAS
    expected = list(zip(predictions.min(axis=0), predictions.max(axis=0), strict=True))
    np.testing.assert_allclose(target_ranges(WEIGHT, BIAS, FEATURES), expected)


def test_training_ranges_come_from_the_entry_metadata() -> None:
    metadata = train(TrainOptions(save=False)).metadata  # seed 004's data
    features, targets = training_ranges(metadata, WEIGHT, BIAS)
    assert features == [(68.0, 103.0), (43.0, 135.0), (36.0, 71.0)]
    assert targets == target_ranges(WEIGHT, BIAS, features)


def test_observe_counts_rows_outside_the_range_and_fills_buckets() -> None:
    monitor = Monitor(FEATURES, target_ranges(WEIGHT, BIAS, FEATURES), TrainingBox(FEATURES))
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
    ranges = target_ranges(WEIGHT, BIAS, FEATURES)
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
