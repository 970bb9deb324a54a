"""Counters, histograms and gauges that the hot paths update in plain Python numbers, and
that reach Prometheus once a second and before every scrape.

With ``bentoml serve``'s several processes, prometheus_client writes every update to the
worker's memory-mapped file, under a lock: some 2 µs each on a busy worker, and a
single-row prediction made eight of them (a request counted, timed in two histogram
cells, in progress up and down, its rows counted, its model call sized). Here an update
is an addition; ``flush_all`` writes the sums, from the worker's event loop: once a second
(the data plane's flush) and when ``GET /metrics`` is answered, so the worker that answers a
scrape is exact and the others are at most a second behind. Each wraps one labelled
series (a child, bound once); every wrapper made is flushed.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

_ALL: list[Counter | Histogram | Gauge] = []


class Counter:
    """``inc`` adds to the series at the next flush."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0
        _ALL.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class Histogram:
    """``observe`` counts the value into its bucket at the next flush (prometheus_client's
    own cells: its ``_sum`` and ``_buckets``, whose bounds it keeps in ``_upper_bounds``)."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        _ALL.append(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount, as le
        self.total += amount

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        self.child._sum.inc(self.total)
        for i, n in enumerate(counts):
            if n:
                self.child._buckets[i].inc(n)
                counts[i] = 0
        self.total = 0.0


class Gauge(Counter):
    """``inc`` and ``dec`` move the series by their net change at the next flush."""

    __slots__ = ()

    def dec(self) -> None:
        self.pending -= 1


def flush_all() -> None:
    """Every wrapper's sums to Prometheus (on the worker's event loop)."""
    for deferred in _ALL:
        deferred.flush()
