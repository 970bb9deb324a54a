"""Deferred metrics (service.observability.deferred): what reaches Prometheus at a flush is
what updating the series directly would have written, values on a bucket's bound included."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.observability import deferred

BUCKETS = (0.005, 0.01, 0.1, 1.0)
VALUES = [0.0, 0.005, 0.0051, 0.01, 0.05, 0.1, 1.0, 1.5, 100.0, 0.003]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_flush_writes_what_direct_updates_would_have() -> None:
    direct, later = CollectorRegistry(), CollectorRegistry()
    made = {
        registry: (
            Counter("calls", "c", ["route"], registry=registry).labels(route="/p"),
            Histogram("seconds", "h", ["route"], buckets=BUCKETS, registry=registry).labels(route="/p"),
            Gauge("in_progress", "g", registry=registry),
        )
        for registry in (direct, later)
    }
    counter, histogram, gauge = made[direct]
    wrapped = (
        deferred.Counter(made[later][0]),
        deferred.Histogram(made[later][1]),
        deferred.Gauge(made[later][2]),
    )
    for value in VALUES:
        for c, h in ((counter, histogram), wrapped[:2]):
            c.inc()
            h.observe(value)
    gauge.inc()
    gauge.inc()
    gauge.dec()
    wrapped[2].inc()
    wrapped[2].inc()
    wrapped[2].dec()
    deferred.flush_all()
    assert samples(later) == samples(direct)
    assert samples(direct)[("seconds_bucket", (("le", "0.005"), ("route", "/p")))] == 3  # 0, 0.003, 0.005
    deferred.flush_all()  # nothing pending: nothing added twice
    assert samples(later) == samples(direct)
