"""Prometheus metrics of our own, next to BentoML's built-in ones on ``/metrics``.

prometheus_client is imported inside the functions on purpose: BentoML switches it to
multiprocess mode (one file per worker, aggregated on scrape) by setting
``PROMETHEUS_MULTIPROC_DIR`` when the worker starts, after this module is imported; a
metric created before that would never reach ``/metrics``. Objects are created on first
use and cached. (``bentoml.metrics`` did the same and is deprecated.)
"""

from __future__ import annotations

from functools import cache
from typing import Any

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576)


@cache
def rows_predicted() -> Any:
    from prometheus_client import Counter

    return Counter("crop_yield_rows_predicted", "Rows predicted, by endpoint", ["endpoint"])


@cache
def rows_per_model_call() -> Any:
    from prometheus_client import Histogram

    return Histogram(
        "crop_yield_rows_per_model_call",
        "Rows in one model call (the merged batch size)",
        buckets=ROW_BUCKETS,
    )


@cache
def model_info() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "crop_yield_model_info",
        "The loaded model; the value is always 1",
        ["model", "version", "device"],
        multiprocess_mode="max",
    )
