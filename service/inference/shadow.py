"""The shadow version: it sees a copy of the calls that name no version, off the hot path,
and its answers are only compared with the answers given (``CROP_YIELD_SHADOW_VERSION``).

A call hands its rows and outputs over (``offer``: a list append); a background task
predicts the collected rows with the shadow model every ``EVERY_S`` and adds
``|shadow − answer|`` per target to ``crop_yield_shadow_abs_difference{target, version}``.
At most ``MAX_PENDING_ROWS`` wait at once: past that, rows are counted as dropped instead of
growing memory (``crop_yield_shadow_rows_total{version, outcome}``). While the shadow version
is not served, nothing is collected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from contract import TARGET_NAMES
from service.observability import metrics
from service.observability.monitoring import add_observations

EVERY_S = 0.5
MAX_PENDING_ROWS = 100_000


class Served(Protocol):
    """What the shadow needs of a served version (the data plane's ``_Loaded``)."""

    @property
    def model(self) -> Any: ...


class Shadow:
    def __init__(self, version: str) -> None:
        self.version = version
        self.serving = False
        """Whether the shadow version is served now (set by each tick); calls offer only then."""
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._dropped = 0
        self._bounds = np.asarray(metrics.SHADOW_DIFFERENCE_BUCKETS)

    def offer(self, rows: np.ndarray, outputs: np.ndarray, answered_by: str) -> None:
        """A call's rows and the outputs it was answered with (cheap: on the hot path)."""
        if not self.serving or answered_by == self.version:
            return
        if self._pending_rows + len(rows) > MAX_PENDING_ROWS:
            self._dropped += len(rows)
            return
        self._pending.append((rows, outputs))
        self._pending_rows += len(rows)

    def compare(self, versions: Mapping[str, Served]) -> np.ndarray | None:
        """One tick: the pending rows through the shadow model, the differences into the
        metrics; returns the n×targets differences (None when there was nothing)."""
        shadow = versions.get(self.version)
        self.serving = shadow is not None
        pending, self._pending, self._pending_rows = self._pending, [], 0
        dropped, self._dropped = self._dropped, 0
        rows_total = metrics.shadow_rows()
        if dropped:
            rows_total.labels(version=self.version, outcome="dropped").inc(dropped)
        if shadow is None or not pending:
            return None
        rows = np.concatenate([r for r, _ in pending])
        answers = np.concatenate([o for _, o in pending])
        difference: np.ndarray = np.abs(shadow.model.predict(rows) - answers)
        histogram = metrics.shadow_difference()
        for j, target in enumerate(TARGET_NAMES):
            column = difference[:, j]
            # "le" buckets: index i holds values in (bounds[i-1], bounds[i]]; the last is +Inf
            counts = np.bincount(np.searchsorted(self._bounds, column), minlength=len(self._bounds) + 1)
            add_observations(
                histogram.labels(target=target, version=self.version), counts, float(column.sum())
            )
        rows_total.labels(version=self.version, outcome="compared").inc(len(rows))
        return difference

    async def run(self, versions: Callable[[], Mapping[str, Served]], every_s: float = EVERY_S) -> None:
        while True:
            self.compare(versions())
            await asyncio.sleep(every_s)
