"""Model monitoring: where served inputs and predictions fall against the training range.

Per model call (not per row, and not per request) the rows and outputs are folded into
numpy accumulators with a handful of vectorized operations; a background task moves the
accumulated counts into Prometheus once a second, and once more when the data plane
stops, so the rows of the last second before a shutdown are counted too. Updating
Prometheus per call would cost two multiprocess-file writes per histogram per call,
several times the model itself.

Each served version has its own ``Monitor`` and ``PrometheusSink``, and its series carry its
``version`` label (``/metrics``):

- ``crop_yield_rows_outside_training_range_total{feature, side, version}``: rows whose
  feature lies below the smallest or above the largest training value (side = below | above).
- ``crop_yield_input_<feature>{version}`` and ``crop_yield_prediction_<target>{version}``
  histograms, with buckets spread evenly over the version's training range (8 buckets) and
  half a range either side (4 each), so the training range's ends are bucket bounds. A
  target's training range is what the model predicts over the box of training feature
  ranges (for a linear model, the extremes over the box's corners).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

import numpy as np

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import ModelMetadata, Reference
from service.observability import metrics
from service.observability.reference_bins import ReferenceBins, ReferenceLayout

INSIDE_BUCKETS = 8
OUTSIDE_BUCKETS = 4
FLUSH_EVERY_S = 1.0
SMALL_CALL_ROWS = 8
DEFER_ROWS = 10_000
"""Model calls of at least this many rows are observed after their answer is sent (the data
plane schedules it), not before: bulk requests' latency does not pay for monitoring."""


def bucket_bounds(low: float, high: float) -> np.ndarray:
    """Upper bounds (Prometheus ``le``) from ``low - span/2`` to ``high + span/2``; +Inf is implicit."""
    span = (high - low) or max(abs(low), 1.0)  # a constant column still gets a usable spread
    steps = np.arange(-OUTSIDE_BUCKETS, INSIDE_BUCKETS + OUTSIDE_BUCKETS + 1)
    bounds = low + span * steps / INSIDE_BUCKETS
    bounds[OUTSIDE_BUCKETS], bounds[OUTSIDE_BUCKETS + INSIDE_BUCKETS] = low, high  # exact ends
    return bounds


def target_ranges(
    weight: np.ndarray, bias: np.ndarray, feature_ranges: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Each target's extremes over the box of feature ranges (a linear map's are at corners)."""
    corners = np.array(list(itertools.product(*feature_ranges)), dtype=np.float64)
    predictions = corners @ np.asarray(weight, np.float64).T + np.asarray(bias, np.float64)
    return [
        (float(lo), float(hi))
        for lo, hi in zip(predictions.min(axis=0), predictions.max(axis=0), strict=True)
    ]


@dataclass
class Accumulated:
    """What the model calls since the last flush added up to."""

    bucket_counts: np.ndarray  # columns × (bounds + 1), non-cumulative, last = +Inf
    sums: np.ndarray  # per column
    below: np.ndarray  # per feature
    above: np.ndarray  # per feature
    reference_bins: np.ndarray | None = None  # columns × bins of the reference (None: no reference)


class Box(Protocol):
    """The training range the extrapolation flags use (``service.inference.training_range``)."""

    @property
    def lows(self) -> np.ndarray: ...

    @property
    def highs(self) -> np.ndarray: ...


class Monitor:
    """Columns are the features, then the targets (``contract`` order)."""

    def __init__(
        self,
        feature_ranges: Sequence[tuple[float, float]],
        target_ranges: Sequence[tuple[float, float]],
        box: Box,
        reference: Reference | None = None,
    ):
        """``reference``: the training distribution from the model's metadata (schema 4 on):
        rows are also counted into its bins (drift); None counts none."""
        self.reference = None if reference is None else ReferenceBins(reference)
        ranges = [*feature_ranges, *target_ranges]
        self.names = [*(f"input_{n}" for n in FEATURE_NAMES), *(f"prediction_{n}" for n in TARGET_NAMES)]
        self.bounds = [bucket_bounds(low, high) for low, high in ranges]
        # The extrapolation flags of the responses compare with the same float32 bounds, so
        # this metric counts exactly the rows flagged outside.
        self.lows, self.highs = box.lows, box.highs
        self._lows_list, self._highs_list = self.lows.tolist(), self.highs.tolist()
        column = (-1, 1)  # shapes for the (columns, n) layout of observe()
        self._lows32 = self.lows.astype(np.float32).reshape(column)
        self._highs32 = self.highs.astype(np.float32).reshape(column)
        self._first32 = np.array([b[0] for b in self.bounds], dtype=np.float32).reshape(column)
        self._step32 = np.array([b[1] - b[0] for b in self.bounds], dtype=np.float32).reshape(column)
        self._buckets = len(self.bounds[0]) + 1  # the last is +Inf
        self._column_offsets32 = (
            (np.arange(len(self.bounds)) * self._buckets).astype(np.float32).reshape(column)
        )
        self._bounds_lists = [b.tolist() for b in self.bounds]
        self._state = self._empty()

    def _empty(self) -> Accumulated:
        columns, buckets = len(self.bounds), len(self.bounds[0]) + 1
        features = len(self.lows)
        return Accumulated(
            np.zeros((columns, buckets), np.int64),
            np.zeros(columns),
            np.zeros(features, np.int64),
            np.zeros(features, np.int64),
        )

    def take(self) -> Accumulated:
        """The accumulated counts, leaving the accumulators empty."""
        state, self._state = self._state, self._empty()
        if self.reference is not None:
            state.reference_bins = self.reference.take()
        return state

    def observe(self, rows: np.ndarray, outputs: np.ndarray) -> None:
        """Fold one model call's n×features inputs and n×targets outputs into the accumulators."""
        if len(rows) <= SMALL_CALL_ROWS:
            self._observe_few(rows, outputs)
            return
        state = self._state
        features = rows.shape[1]
        # One column per row of a (columns, n) float32 array: reductions along contiguous
        # memory are ten times faster than down the columns of the n×3 input.
        values = np.empty((features + outputs.shape[1], len(rows)), dtype=np.float32)
        values[:features] = rows.T
        values[features:] = outputs.T
        if self.reference is not None:
            self.reference.observe(values)  # before the arithmetic below rewrites values
        state.below += np.count_nonzero(values[:features] < self._lows32, axis=1)
        state.above += np.count_nonzero(values[:features] > self._highs32, axis=1)
        state.sums += values.sum(axis=1, dtype=np.float64)
        # Bounds are evenly spaced, so a value's bucket is arithmetic, for all columns at once:
        # i = ceil((v - first) / step) puts v in (bounds[i-1], bounds[i]], Prometheus' "le".
        # (A value within float32 rounding of a bound may land in the neighbouring bucket.)
        values -= self._first32
        values /= self._step32  # dividing keeps a value exactly on a bound exact, where it can be
        np.ceil(values, out=values)
        np.clip(values, 0, self._buckets - 1, out=values)
        values += self._column_offsets32
        counts = np.bincount(values.astype(np.intp).ravel(), minlength=state.bucket_counts.size)
        state.bucket_counts += counts.reshape(state.bucket_counts.shape)

    def _observe_few(self, rows: np.ndarray, outputs: np.ndarray) -> None:
        """The same for a few rows in plain Python: a numpy call costs about a microsecond
        whatever its size, and a single-row call would make some twenty of them."""
        state = self._state
        counts, sums, below, above = state.bucket_counts, state.sums, state.below, state.above
        for row, predicted in zip(rows.tolist(), outputs.tolist(), strict=True):
            for j, value in enumerate(row):
                if value < self._lows_list[j]:
                    below[j] += 1
                elif value > self._highs_list[j]:
                    above[j] += 1
            values = row + predicted
            for j, value in enumerate(values):
                counts[j, bisect.bisect_left(self._bounds_lists[j], value)] += 1  # "le" as above
                sums[j] += value
            if self.reference is not None:
                self.reference.observe_row(values)


class PrometheusSink:
    """Moves one served version's ``Monitor`` counts into Prometheus series labelled with that
    version (created in the worker, once BentoML has set up multiprocess mode).

    Each version's histograms have their own buckets (its training range), while
    prometheus_client fixes a Histogram's buckets per object and refuses two of one name in
    a registry. So without ``registry`` nothing is registered: in multiprocess mode
    (``bentoml serve``) the values go to the worker's files, which ``MultiProcessCollector``
    merges by sample name and labels, ``le`` among them, so every version reaches /metrics
    with its own buckets; outside it they go to a private registry (``self.registry``: not
    on /metrics). Sinks of one version share its series (``_shared``). ``registry``: register
    the series there instead (tests; one sink per registry).

    To stop a version: ``flush()`` once more and drop the sink.
    """

    def __init__(self, monitor: Monitor, version: str, registry: Any = None) -> None:
        self.monitor = monitor
        self.version = version
        reference = monitor.reference
        if registry is None:
            layout = tuple(tuple(bounds.tolist()) for bounds in monitor.bounds)
            columns = None if reference is None else reference.layout()
            series = _shared(version, tuple(monitor.names), layout, columns)
        else:
            columns = None if reference is None else reference.layout()
            series = _Series.bind(version, monitor.names, monitor.bounds, registry, columns)
        self.registry = series.registry
        self.histograms = series.histograms
        self._series = series

    def flush(self) -> None:
        """Move what the model calls since the last flush added up to into the metrics (the
        background task's tick, and the data plane's stop: nothing observed is left behind)."""
        state = self.monitor.take()
        for feature, below, above in zip(FEATURE_NAMES, state.below, state.above, strict=True):
            if below:
                self._series.count_outside(feature, "below", int(below))
            if above:
                self._series.count_outside(feature, "above", int(above))
        for histogram, counts, total in zip(self.histograms, state.bucket_counts, state.sums, strict=True):
            add_observations(histogram, counts, float(total))
        if state.reference_bins is not None:
            for column, counts in zip(self._series.reference_bins, state.reference_bins, strict=False):
                for i in np.flatnonzero(counts):
                    column[i].inc(int(counts[i]))

    async def run(self, every_s: float = FLUSH_EVERY_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.flush()


@dataclass(frozen=True)
class _Series:
    """One version's monitoring series."""

    version: str
    registry: Any
    """Where they are registered; None in multiprocess mode (the worker's files)."""
    outside: Any
    """The out-of-range counter; its (feature, side) series are bound on first use, so a
    series appears once it counts, as with one version."""
    histograms: list[Any]
    """Bound to the version, in ``Monitor.names`` order."""
    reference_bins: list[list[Any]]
    """Drift counters per column (features, then targets) and bin, all bound at start so
    that an empty bin reads 0; empty without a reference."""
    _outside_bound: dict[tuple[str, str], Any] = field(default_factory=dict)

    def count_outside(self, feature: str, side: str, rows: int) -> None:
        counter = self._outside_bound.get((feature, side))
        if counter is None:
            counter = self.outside.labels(feature=feature, side=side, version=self.version)
            self._outside_bound[feature, side] = counter
        counter.inc(rows)

    @staticmethod
    def bind(
        version: str,
        names: Sequence[str],
        bounds: Sequence[np.ndarray],
        registry: Any,
        reference: ReferenceLayout | None = None,
    ) -> _Series:
        from prometheus_client import Counter, Histogram  # after BentoML set up multiprocess mode

        outside = Counter(
            "crop_yield_rows_outside_training_range",
            "Rows with a feature outside the range of the training data, by model version",
            ["feature", "side", "version"],
            registry=registry,
        )
        histograms = [
            Histogram(
                f"crop_yield_{name}",
                _HELP[name.split("_", 1)[0]],
                ["version"],
                buckets=[*column_bounds, float("inf")],
                registry=registry,
            ).labels(version=version)
            for name, column_bounds in zip(names, bounds, strict=True)
        ]
        return _Series(version, registry, outside, histograms, _bind_reference(version, reference, registry))


@cache
def _shared(
    version: str,
    names: tuple[str, ...],
    layout: tuple[tuple[float, ...], ...],
    reference: ReferenceLayout | None,
) -> _Series:
    """One set of series per version and layout for the process's life. In multiprocess mode
    a value object keeps its own running total and writes it whole, so two objects of one
    series would overwrite each other's counts (the data plane may start a reloaded version
    before the old one's last flush); prometheus_client never frees them either. One entry
    per version ever served: bounded by the model store."""
    from prometheus_client import CollectorRegistry

    registry = None if metrics.writes_files() else CollectorRegistry()
    return _Series.bind(version, names, [np.array(bounds) for bounds in layout], registry, reference)


def _bind_reference(version: str, reference: ReferenceLayout | None, registry: Any) -> list[list[Any]]:
    """The drift counters of a version, every bin bound (so it reads 0 before any row), and
    the reference shares set on their gauges."""
    if reference is None:
        return []
    from prometheus_client import Counter, Gauge

    kinds: dict[str, tuple[Any, Any]] = {}
    bound = []
    for kind, label, column, shares in reference:
        if kind not in kinds:
            kinds[kind] = (
                Counter(
                    f"crop_yield_{kind}_bin_rows",
                    _BIN_HELP[kind],
                    [label, "bin", "version"],
                    registry=registry,
                ),
                Gauge(
                    f"crop_yield_{kind}_reference_ratio",
                    _RATIO_HELP[kind],
                    [label, "bin", "version"],
                    multiprocess_mode="livemax",
                    registry=registry,
                ),
            )
        counter, gauge = kinds[kind]
        for i, share in enumerate(shares):
            gauge.labels(column, str(i), version).set(share)
        bound.append([counter.labels(column, str(i), version) for i in range(len(shares))])
    return bound


_BIN_HELP = {
    "input": "Served rows per bin of this feature's training reference (drift), by model version; "
    "bin 0 is below the training minimum, the last above the maximum",
    "output": "Predictions per bin of this target's reference (the model's predictions on its "
    "training rows), by model version",
}
_RATIO_HELP = {
    "input": "Share of the training rows in each bin of this feature (the reference the PSI compares with)",
    "output": "Share of the predictions on the training rows in each bin of this target",
}


_HELP = {
    "input": "Served inputs of this feature, by model version (buckets from its training range)",
    "prediction": "Predictions of this target, by model version (buckets: its range over training inputs)",
}


def add_observations(histogram: Any, bucket_counts: np.ndarray, total: float) -> None:
    """Add many observations to a prometheus_client Histogram at once.

    prometheus_client has only ``observe(one_value)``; this writes the per-bucket counts
    and the sum into the histogram's own values, which is exactly what that many
    ``observe`` calls would do (a unit test holds the two equal, so a prometheus_client
    upgrade that changes these private fields fails there, by name).
    """
    if not bucket_counts.any():
        return
    for i in np.flatnonzero(bucket_counts):
        histogram._buckets[i].inc(int(bucket_counts[i]))
    histogram._sum.inc(total)


def training_ranges(
    metadata: ModelMetadata, weight: np.ndarray, bias: np.ndarray
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(feature ranges, target ranges) of a store entry: the training data's min and max per
    feature, from its metadata; the targets' from the model over that box."""
    features = [metadata.range_of(name) for name in FEATURE_NAMES]
    return features, target_ranges(weight, bias, features)
