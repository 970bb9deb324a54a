"""Prometheus metrics of our own, next to BentoML's built-in ones on ``/metrics``.

``bentoml.metrics`` wraps prometheus_client so that counters from every worker process
are aggregated; objects are created lazily on first use, not at import.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import bentoml

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576)


@cache
def rows_predicted() -> Any:
    return bentoml.metrics.Counter(
        name="crop_yield_rows_predicted",
        documentation="Rows predicted, by endpoint",
        labelnames=["endpoint"],
    )


@cache
def rows_per_model_call() -> Any:
    return bentoml.metrics.Histogram(
        name="crop_yield_rows_per_model_call",
        documentation="Rows in one model call (the merged batch size)",
        buckets=ROW_BUCKETS,
    )


@cache
def model_info() -> Any:
    return bentoml.metrics.Gauge(
        name="crop_yield_model_info",
        documentation="The loaded model; the value is always 1",
        labelnames=["model", "version", "device"],
        multiprocess_mode="max",
    )
