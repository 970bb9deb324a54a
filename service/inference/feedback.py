"""Ground truth: how far a model version's predictions were from the yields observed later
(``POST /feedback``), per row for the caller and as sums per target and version for
Prometheus, whose rules turn them into live RMSE, MAE, bias and interval coverage.

The scoring is pure numpy (no torch, no server); ``count`` and ``export_version`` write
the metrics (``service.observability.metrics``: ``crop_yield_feedback_*`` and
``crop_yield_model_training_rmse``).

**Sign.** An error is ``actual − predicted`` (the residual): positive when the model predicted
too low, negative when it predicted too high; the bias is its mean. (The champion comparison
of ``training`` reports the opposite sign, predicted − actual.)

**Coverage.** A row is inside an interval when ``|actual − predicted| <= half width`` of the
interval at that level (``service.inference.intervals``: the intervals ``/predict`` returns),
at the levels ``LEVELS``. A version trained before intervals were recorded has none: its rows
count errors but no coverage (``inside`` is None, and it gets no coverage series).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from contract import TARGET_NAMES
from contract.metadata import ModelMetadata
from service.inference.intervals import Intervals
from service.observability import metrics

LEVELS: tuple[float, ...] = (0.9, 0.95)
"""The interval levels whose coverage feedback counts (label ``level``: "0.9", "0.95")."""
TRAINING_SPLIT = "train"
"""The split of the metadata's metrics whose RMSE is exported (``crop_yield_model_training_rmse``)."""


def level_label(level: float) -> str:
    """The ``level`` label of the coverage series: "0.9", "0.95"."""
    return f"{level:g}"


def percent(level: float) -> int:
    """90 for 0.9: the suffix of the answer's ``inside_90`` and ``coverage_90``."""
    return round(level * 100)


@dataclass(frozen=True)
class Totals:
    """What one feedback call adds to the metrics, per target (arrays in ``TARGET_NAMES`` order)."""

    rows: int
    squared: np.ndarray
    """Σ (actual − predicted)², (t/ha)²."""
    absolute: np.ndarray
    """Σ |actual − predicted|, t/ha."""
    positive: np.ndarray
    """Σ (actual − predicted) over the rows where it is positive (predicted too low), t/ha."""
    negative: np.ndarray
    """Σ (predicted − actual) over the rows where the actual is below (predicted too high), t/ha."""
    inside: dict[float, np.ndarray] | None
    """Per level, the rows whose actual lay inside the interval; None: the version has no intervals."""

    def summary(self) -> dict[str, dict[str, float]]:
        """Per target: ``rmse``, ``mae``, ``bias`` (mean of actual − predicted) and, with
        intervals, ``coverage_90`` and ``coverage_95`` (shares of rows inside)."""
        n = max(self.rows, 1)
        result: dict[str, dict[str, float]] = {}
        for j, target in enumerate(TARGET_NAMES):
            figures = {
                "rmse": float(np.sqrt(self.squared[j] / n)),
                "mae": float(self.absolute[j] / n),
                "bias": float((self.positive[j] - self.negative[j]) / n),
            }
            for level, counts in (self.inside or {}).items():
                figures[f"coverage_{percent(level)}"] = float(counts[j] / n)
            result[target] = figures
        return result


@dataclass(frozen=True)
class Scored:
    """One feedback call's result: ``errors`` (float64 n×targets, actual − predicted) and, per
    level, whether each actual lay inside the interval (bool n×targets; None without
    intervals); ``tag`` names the model version that made the predictions."""

    errors: np.ndarray
    inside: dict[float, np.ndarray] | None
    tag: str

    @property
    def version(self) -> str:
        return self.tag.partition(":")[2]

    @cached_property
    def totals(self) -> Totals:
        errors = self.errors
        return Totals(
            rows=len(errors),
            squared=np.square(errors).sum(axis=0),
            absolute=np.abs(errors).sum(axis=0),
            positive=np.clip(errors, 0.0, None).sum(axis=0),
            negative=np.clip(-errors, 0.0, None).sum(axis=0),
            inside=None
            if self.inside is None
            else {level: flags.sum(axis=0) for level, flags in self.inside.items()},
        )


def half_widths(intervals: Intervals, rows: np.ndarray) -> dict[float, np.ndarray] | None:
    """Per level of ``LEVELS``, the intervals' n×targets half widths; None without interval statistics."""
    if intervals.basis is None:
        return None
    return {level: intervals.half_widths(rows, level) for level in LEVELS}


def score(outputs: np.ndarray, actuals: np.ndarray, half: dict[float, np.ndarray] | None, tag: str) -> Scored:
    """The model's n×targets ``outputs`` against the observed ``actuals`` (n×targets, t/ha),
    with the intervals' ``half`` widths per level (``half_widths``)."""
    errors = np.asarray(actuals, dtype=np.float64) - np.asarray(outputs, dtype=np.float64)
    inside = None if half is None else {level: np.abs(errors) <= width for level, width in half.items()}
    return Scored(errors, inside, tag)


@dataclass(frozen=True)
class _Series:
    """One target's feedback counters for one version, labelled (``inside``: per level, none
    for a version without intervals)."""

    rows: Any
    squared: Any
    absolute: Any
    positive: Any
    negative: Any
    inside: dict[float, Any]

    @classmethod
    def of(cls, target: str, version: str, intervals: bool) -> _Series:
        labels = {"target": target, "version": version}
        return cls(
            metrics.feedback_rows().labels(**labels),
            metrics.feedback_squared_error().labels(**labels),
            metrics.feedback_absolute_error().labels(**labels),
            metrics.feedback_error().labels(**labels, sign="positive"),
            metrics.feedback_error().labels(**labels, sign="negative"),
            {
                level: metrics.feedback_inside_interval().labels(**labels, level=level_label(level))
                for level in (LEVELS if intervals else ())
            },
        )


def count(scored: Scored) -> None:
    """Add a call's totals to the ``crop_yield_feedback_*`` counters of its version."""
    totals = scored.totals
    for j, target in enumerate(TARGET_NAMES):
        series = _Series.of(target, scored.version, totals.inside is not None)
        series.rows.inc(totals.rows)
        series.squared.inc(float(totals.squared[j]))
        series.absolute.inc(float(totals.absolute[j]))
        series.positive.inc(float(totals.positive[j]))
        series.negative.inc(float(totals.negative[j]))
        for level, inside in series.inside.items():
            inside.inc(int((totals.inside or {})[level][j]))


def export_version(metadata: ModelMetadata, version: str) -> None:
    """When a version starts serving: ``crop_yield_model_training_rmse{target, version}`` from its
    metadata (the RMSE of the fit on its training rows), for rules to compare live errors
    with, and its feedback counters at 0, so that ``rate()`` counts its first feedback too (a
    series that first appears at a value has no earlier point to rise from)."""
    fitted = metadata.metrics.get(TRAINING_SPLIT, {})
    for target in TARGET_NAMES:
        if target in fitted:
            metrics.training_rmse().labels(target=target, version=version).set(fitted[target].rmse)
        _Series.of(target, version, metadata.intervals is not None)
