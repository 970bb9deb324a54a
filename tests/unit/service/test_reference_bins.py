"""Drift counting without a server: served rows counted into the reference bins exactly as
``contract.drift`` (the offline twin) bins them, on the bulk and the few-rows paths, and the
Prometheus series: every bin there from the start, reference shares on their gauges."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from contract import FEATURE_NAMES, TARGET_NAMES, drift
from contract.metadata import Reference
from service.inference.training_range import TrainingBox
from service.observability.monitoring import Monitor, PrometheusSink, target_ranges
from service.observability.reference_bins import ReferenceBins

WEIGHT = np.array([[0.4, 0.9, 0.6], [-0.2, 0.8, 1.1]])
BIAS = np.array([1.0, -2.0])


def reference_and_rows(seed: int = 0, rows: int = 500) -> tuple[Reference, np.ndarray]:
    rng = np.random.default_rng(seed)
    # float32-representable training values, some repeated (ties on edges), so binning the
    # float32 served rows and the float64 file agree exactly.
    features = np.round(rng.normal([80, 90, 55], [8, 20, 7], size=(rows, 3))).astype(np.float32)
    return Reference.of(features.astype(np.float64), predict(features)), features


def predict(rows: np.ndarray) -> np.ndarray:
    out: np.ndarray = (
        rows.astype(np.float32) @ WEIGHT.T.astype(np.float32) + BIAS.astype(np.float32)
    ).astype(np.float32)
    return out


def monitor_for(reference: Reference, features: np.ndarray) -> Monitor:
    ranges = [(float(features[:, j].min()), float(features[:, j].max())) for j in range(3)]
    return Monitor(ranges, target_ranges(WEIGHT, BIAS, ranges), TrainingBox(ranges), reference)


def expected_counts(reference: Reference, rows: np.ndarray, outputs: np.ndarray) -> list[np.ndarray]:
    columns = [*reference.features.values(), *reference.targets.values()]
    values = np.hstack([rows, outputs]).astype(np.float64)
    return [drift.bin_counts(values[:, j], np.array(c.edges)) for j, c in enumerate(columns)]


def served_rows(features: np.ndarray, seed: int = 1) -> np.ndarray:
    """Rows across and beyond the training range, edges and extremes included."""
    rng = np.random.default_rng(seed)
    shifted = features[rng.integers(0, len(features), 300)] + rng.normal(3, 6, size=(300, 3)).astype(
        np.float32
    )
    extremes = np.vstack([features.min(axis=0), features.max(axis=0), features.min(axis=0) - 1])
    return np.vstack([features[:200], shifted, extremes]).astype(np.float32)


@pytest.mark.parametrize("path", ["bulk", "row by row"])
def test_live_rows_fall_in_the_bins_the_offline_twin_puts_them_in(path: str) -> None:
    reference, features = reference_and_rows()
    monitor = monitor_for(reference, features)
    rows = served_rows(features)
    outputs = predict(rows)
    if path == "bulk":
        monitor.observe(rows, outputs)
    else:
        for i in range(len(rows)):
            monitor.observe(rows[i : i + 1], outputs[i : i + 1])
    counted = monitor.take().reference_bins
    assert counted is not None
    for j, expected in enumerate(expected_counts(reference, rows, outputs)):
        np.testing.assert_array_equal(counted[j, : len(expected)], expected, err_msg=f"column {j}")
        assert not counted[j, len(expected) :].any()  # past the column's own bins


def test_the_training_maximum_is_inside_and_anything_above_is_in_the_upper_tail() -> None:
    reference, features = reference_and_rows()
    bins = ReferenceBins(reference)
    top = float(features[:, 0].max())
    column = np.zeros((5, 3), np.float32)
    column[0] = [top, np.nextafter(np.float32(top), np.float32(np.inf)), float(features[:, 0].min()) - 0.5]
    bins.observe(column)
    counts = bins.take()[0]
    last = len(reference.features["temperature"].edges) - 1  # the last inner bin's index
    assert (counts[last], counts[last + 1], counts[0]) == (1, 1, 1)


def test_take_empties_the_counts() -> None:
    reference, features = reference_and_rows()
    monitor = monitor_for(reference, features)
    monitor.observe(features[:20], predict(features[:20]))
    first = monitor.take().reference_bins
    second = monitor.take().reference_bins
    assert first is not None
    assert first.sum() == 20 * 5
    assert second is not None
    assert second.sum() == 0


def test_a_model_without_a_reference_counts_no_bins() -> None:
    _, features = reference_and_rows()
    ranges = [(60.0, 100.0)] * 3
    monitor = Monitor(ranges, target_ranges(WEIGHT, BIAS, ranges), TrainingBox(ranges))
    monitor.observe(features[:20], predict(features[:20]))
    assert monitor.take().reference_bins is None


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_every_bin_is_a_series_from_the_start_and_the_reference_shares_are_gauges() -> None:
    reference, features = reference_and_rows()
    registry = CollectorRegistry()
    monitor = monitor_for(reference, features)
    PrometheusSink(monitor, "v1", registry)
    for name in FEATURE_NAMES:
        column = reference.features[name]
        for i, share in enumerate(column.shares):
            labels = {"feature": name, "bin": str(i), "version": "v1"}
            assert sample(registry, "crop_yield_input_bin_rows_total", **labels) == 0
            assert sample(registry, "crop_yield_input_reference_ratio", **labels) == pytest.approx(share)
    for name in TARGET_NAMES:
        bins = len(reference.targets[name].edges) + 1
        labels = {"target": name, "bin": str(bins - 1), "version": "v1"}
        assert sample(registry, "crop_yield_output_bin_rows_total", **labels) == 0
        assert sample(registry, "crop_yield_output_bin_rows_total", **{**labels, "bin": str(bins)}) is None


def test_a_flush_adds_the_counts_to_the_bin_series() -> None:
    reference, features = reference_and_rows()
    registry = CollectorRegistry()
    monitor = monitor_for(reference, features)
    sink = PrometheusSink(monitor, "v1", registry)
    rows = served_rows(features)
    outputs = predict(rows)
    monitor.observe(rows, outputs)
    sink.flush()
    expected = expected_counts(reference, rows, outputs)
    kinds = [("input", "feature", n) for n in FEATURE_NAMES] + [("output", "target", n) for n in TARGET_NAMES]
    for (kind, label, name), counts in zip(kinds, expected, strict=True):
        read = [
            sample(
                registry, f"crop_yield_{kind}_bin_rows_total", **{label: name, "bin": str(i), "version": "v1"}
            )
            for i in range(len(counts))
        ]
        assert read == counts.tolist(), name


def test_float32_edges_bin_float32_values_as_the_float64_edges_do() -> None:
    from service.observability.reference_bins import float32_edges

    edges = np.array([60.0, 72.99999999999999, 73.00000000001, 77.3, 90.0])
    rounded = float32_edges(edges)
    values = np.array([59.99, 60.0, 72.99, 73.0, 73.01, 77.29, 77.3, 77.31, 90.0, 90.01], dtype=np.float32)
    served = np.searchsorted(rounded, values, side="right")
    np.testing.assert_array_equal(served, drift.bin_indices(values.astype(np.float64), edges))


def test_a_call_above_the_exact_limit_is_counted_by_a_systematic_sample() -> None:
    from service.observability.reference_bins import EXACT_ROWS, SAMPLED_ROWS

    reference, features = reference_and_rows()
    bins = ReferenceBins(reference)
    rng = np.random.default_rng(5)
    rows = features[rng.integers(0, len(features), 100_000)] + rng.normal(0, 3, (100_000, 3)).astype(
        np.float32
    )
    values = np.vstack([rows.T, predict(rows).T]).astype(np.float32)
    bins.observe(values[:, :EXACT_ROWS])
    exact = bins.take()
    assert exact.sum(axis=1).tolist() == [EXACT_ROWS] * 5  # every row, once
    bins.observe(values)
    sampled = bins.take()
    k = -(-100_000 // SAMPLED_ROWS)
    assert k == 25
    assert sampled.sum(axis=1).tolist() == [100_000] * 5  # 4,000 rows counted 25 times each
    assert not (sampled % k).any()
    edges = np.array(reference.features["temperature"].edges)
    truth = drift.shares(drift.bin_counts(rows[:, 0].astype(np.float64), edges))
    estimate = drift.shares(sampled[0, : len(truth)])
    np.testing.assert_allclose(estimate, truth, atol=0.02)  # a 4,000-row sample's precision
    assert drift.psi(estimate, truth) < 0.01
