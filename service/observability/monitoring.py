"""Model monitoring: where served inputs and predictions fall against the training range.

Per model call (not per row, and not per request) the rows and outputs are folded into
numpy accumulators with a handful of vectorized operations; a background task moves the
accumulated counts into Prometheus once a second, and once more when the data plane
stops, so the rows of the last second before a shutdown are counted too. Updating
Prometheus per call would cost two multiprocess-file writes per histogram per call,
several times the model itself.

Metrics (``/metrics``):

- ``crop_yield_rows_outside_training_range_total{feature, side}``: rows whose feature lies
  below the smallest or above the largest training value (side = below | above).
- ``crop_yield_input_<feature>`` and ``crop_yield_prediction_<target>`` histograms, with
  buckets spread evenly over the training range (8 buckets) and half a range either side
  (4 each), so the training range's ends are bucket bounds. A target's training range is
  what the model predicts over the box of training feature ranges (for a linear model,
  the extremes over the box's corners).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import ModelMetadata

INSIDE_BUCKETS = 8
OUTSIDE_BUCKETS = 4
FLUSH_EVERY_S = 1.0
SMALL_CALL_ROWS = 8


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
    ):
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
            for j, value in enumerate(row + predicted):
                counts[j, bisect.bisect_left(self._bounds_lists[j], value)] += 1  # "le" as above
                sums[j] += value

    def take(self) -> Accumulated:
        """The accumulated counts, leaving the accumulators empty."""
        state, self._state = self._state, self._empty()
        return state


class PrometheusSink:
    """Moves ``Monitor`` counts into Prometheus metrics (created on first use, in the worker)."""

    def __init__(self, monitor: Monitor, registry: Any = None) -> None:
        """``registry``: prometheus_client's default one unless given (tests pass their own)."""
        from prometheus_client import REGISTRY, Counter, Histogram  # after BentoML set up multiprocess mode

        registry = REGISTRY if registry is None else registry
        self.monitor = monitor
        self.outside = Counter(
            "crop_yield_rows_outside_training_range",
            "Rows with a feature outside the range of the training data",
            ["feature", "side"],
            registry=registry,
        )
        self.histograms = [
            Histogram(
                f"crop_yield_{name}",
                _HELP[name.split("_", 1)[0]],
                buckets=[*bounds, float("inf")],
                registry=registry,
            )
            for name, bounds in zip(monitor.names, monitor.bounds, strict=True)
        ]

    def flush(self) -> None:
        """Move what the model calls since the last flush added up to into the metrics (the
        background task's tick, and the data plane's stop: nothing observed is left behind)."""
        state = self.monitor.take()
        for feature, below, above in zip(FEATURE_NAMES, state.below, state.above, strict=True):
            if below:
                self.outside.labels(feature=feature, side="below").inc(int(below))
            if above:
                self.outside.labels(feature=feature, side="above").inc(int(above))
        for histogram, counts, total in zip(self.histograms, state.bucket_counts, state.sums, strict=True):
            add_observations(histogram, counts, float(total))

    async def run(self, every_s: float = FLUSH_EVERY_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.flush()


_HELP = {
    "input": "Served inputs of this feature (buckets from its training range)",
    "prediction": "Predictions of this target (buckets from its range over the training inputs)",
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
