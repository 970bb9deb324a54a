"""The service's Prometheus metrics and their exposition on ``/metrics``.

BentoML's own request metrics are switched off (``metrics.enabled: false``; see
``service.http.request_metrics``, which records them under the same names and labels), so
``/metrics`` is served here too: every worker's samples, aggregated.

prometheus_client is imported inside the functions on purpose: BentoML switches it to
multiprocess mode (one file per worker, aggregated on scrape) by setting
``PROMETHEUS_MULTIPROC_DIR`` when the worker starts, after this module is imported; a
metric created before that would never reach ``/metrics``. Objects are created on first
use and cached. (``bentoml.metrics`` did the same and is deprecated.)

Live gauges (``multiprocess_mode="livesum"``, ``"livemax"``) count only running workers:
each worker drops its own files at a graceful shutdown (``forget_this_worker``) and, at its
start, those of workers that were killed (``forget_dead_workers``); the service's start-up
and shutdown hooks call them.

Several model versions are served side by side, so the series of predictions carry a
``version`` label (the model store's version string): ``MAX_VERSIONS`` bounds the values one
process records, as ``MAX_ENDPOINTS`` does for paths.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection, Iterator
from functools import cache
from pathlib import Path
from typing import Any

REQUEST_LABELS = (
    "endpoint",
    "service_name",
    "service_version",
    "http_response_code",
    "runner_name",
    "version",
)
"""The labels of BentoML's request metrics, kept so that dashboards written for them work, and
the model version that answered ("" for a response that names none)."""
MAX_VERSIONS = 16
"""Distinct ``version`` values one process binds per metric; later ones count as ``OTHER_VERSION``.
Versions come only from the service's own answers, but a label's values must stay bounded."""
OTHER_VERSION = "other"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0)
"""BentoML 1.4's default request-duration buckets (seconds)."""
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576)
SHADOW_DIFFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)
"""|shadow − answer| of a yield (t/ha); +Inf is implicit."""


@cache
def rows_predicted() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_rows_predicted", "Rows predicted, by endpoint and model version", ["endpoint", "version"]
    )


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

    # A multiprocess gauge cannot drop a series: a version no longer served is set to 0, and
    # "livemax" lets a killed worker's file stop counting (forget_dead_workers), as "max" did not.
    return Gauge(
        "crop_yield_model_info",
        'Model versions: 1 while served, else 0; default="true": the one answering calls that name none',
        ["model", "version", "device", "default"],
        multiprocess_mode="livemax",
    )


@cache
def memory_budget() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "crop_yield_memory_budget_bytes",
        "Memory each worker admits bulk requests against (service.inference.admission); 0: no budget",
        multiprocess_mode="max",
    )


@cache
def requests_total() -> Any:
    from prometheus_client import Counter

    return Counter("bentoml_service_request_total", "Requests answered, by route and status", REQUEST_LABELS)


@cache
def request_duration() -> Any:
    from prometheus_client import Histogram

    return Histogram(
        "bentoml_service_request_duration_seconds",
        "Seconds from a request's arrival to its answer's last byte, by route and status",
        REQUEST_LABELS,
        buckets=DURATION_BUCKETS,
    )


@cache
def requests_in_progress() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "bentoml_service_request_in_progress",
        "Requests being answered now",
        ["service_name", "service_version", "runner_name"],
        multiprocess_mode="livesum",
    )


@cache
def grpc_requests_total() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_grpc_requests", "gRPC calls answered, by method and status code", ["method", "code"]
    )


@cache
def grpc_request_duration() -> Any:
    from prometheus_client import Histogram

    return Histogram(
        "crop_yield_grpc_request_duration_seconds",
        "Seconds from a gRPC call's arrival to its answer, by method and the model version that answered",
        ["method", "version"],
        buckets=DURATION_BUCKETS,
    )


@cache
def payload_events() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_payload_events",
        "Payload-logging CloudEvents (service.observability.payloads), per sink: sent, failed (given up "
        "after the retries, or refused) or dropped (a full queue, or left at shutdown)",
        ["outcome"],
    )


@cache
def shadow_rows() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_shadow_rows",
        "Rows offered to the shadow version: compared, or dropped while too many waited",
        ["version", "outcome"],
    )


@cache
def shadow_difference() -> Any:
    from prometheus_client import Histogram

    return Histogram(
        "crop_yield_shadow_abs_difference",
        "|shadow version's prediction - the answer given|, by target and shadow version",
        ["target", "version"],
        buckets=SHADOW_DIFFERENCE_BUCKETS,
    )


# Ground truth (POST /feedback, service.inference.feedback): sums per target and model version,
# so that rules divide rates of sums by the rate of rows (live RMSE, MAE, bias, coverage).
# A counter never goes down, so the signed error is kept as its two halves (``sign``), as
# Prometheus advises for sums of observations that may be negative.


def _feedback_counter(name: str, documentation: str, *labels: str) -> Any:
    from prometheus_client import Counter

    return Counter(f"crop_yield_feedback_{name}", documentation, ["target", "version", *labels])


@cache
def feedback_rows() -> Any:
    return _feedback_counter(
        "rows", "Rows of ground truth (POST /feedback) scored, by target and model version"
    )


@cache
def feedback_squared_error() -> Any:
    return _feedback_counter(
        "squared_error",
        "Sum of (actual - predicted)^2 over feedback rows, (t/ha)^2, by target and model version",
    )


@cache
def feedback_absolute_error() -> Any:
    return _feedback_counter(
        "absolute_error", "Sum of |actual - predicted| over feedback rows, t/ha, by target and model version"
    )


@cache
def feedback_error() -> Any:
    return _feedback_counter(
        "error",
        "Signed error actual - predicted over feedback rows, t/ha, as two sums: sign=positive adds "
        "the rows where the actual was above the prediction, sign=negative the magnitudes of those "
        "below it (signed sum = positive - negative)",
        "sign",
    )


@cache
def feedback_inside_interval() -> Any:
    return _feedback_counter(
        "inside_interval",
        "Feedback rows whose actual lay inside the prediction interval at this level, by target "
        "and model version (no series for a version without interval statistics)",
        "level",
    )


@cache
def training_rmse() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "crop_yield_model_training_rmse",
        "RMSE of the model version on its training rows (t/ha), from its metadata, by target",
        ["target", "version"],
        multiprocess_mode="livemax",
    )


@cache
def grpc_calls_started() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_grpc_calls_started",
        "gRPC calls begun, by method; those the transport refused before the service saw them "
        "(a message over the size limit) are started but not in crop_yield_grpc_requests_total",
        ["method"],
    )


@cache
def inference_requests() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_inference_requests",
        "Prediction requests by model version and Triton statistics stage (success, fail; and "
        "queue, compute_input, compute_infer, compute_output for those that reached the model)",
        ["version", "stage"],
    )


@cache
def inference_seconds() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_inference_seconds",
        "Seconds prediction requests spent in each Triton statistics stage, by model version",
        ["version", "stage"],
    )


@cache
def model_executions() -> Any:
    from prometheus_client import Counter

    return Counter("crop_yield_model_executions", "Model calls (batches), by model version", ["version"])


@cache
def model_execution_rows() -> Any:
    from prometheus_client import Counter

    return Counter(
        "crop_yield_model_execution_rows", "Rows through model calls (Triton's inference_count)", ["version"]
    )


@cache
def last_inference() -> Any:
    from prometheus_client import Gauge

    return Gauge(
        "crop_yield_last_inference_timestamp_seconds",
        "When the last prediction request of the version ended (Unix time)",
        ["version"],
        multiprocess_mode="max",
    )


def samples(names: Collection[str]) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the samples called ``names``, summed over the workers as
    ``exposition`` sums them."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    registry: Any = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in names:
                yield sample.name, sample.labels, sample.value


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_([1-9][0-9]*)\.db")
"""A multiprocess file of a gauge that counts only while its process runs (``livesum``,
``livemax``, ...), named ``gauge_<mode>_<pid>.db``: prometheus_client's naming."""


def writes_files() -> bool:
    """Whether metric values go to per-process files (multiprocess mode) rather than to this
    process's memory: prometheus_client chose when first imported, from
    ``PROMETHEUS_MULTIPROC_DIR``, and asking its value class is what stays true after that."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def forget_dead_workers() -> list[int]:
    """At a worker's start: drop the live-gauge files of processes that no longer run.

    A worker killed without a graceful shutdown (SIGKILL, the OOM killer; BentoML starts a
    new one with a new pid) leaves its live gauge files behind:
    ``bentoml_service_request_in_progress`` would add the requests it had in flight at that
    moment forever, and ``crop_yield_model_info`` show the versions it served. This is
    ``prometheus_client.multiprocess.mark_process_dead`` for every such pid: only live
    gauges are removed; counters and histograms of dead workers stay, so totals never go
    backwards. (A pid already reused by another process is taken for running and kept until
    a later start.) Returns the pids marked dead (none outside ``bentoml serve``).
    """
    directory = multiprocess_dir()
    if directory is None:
        return []
    from prometheus_client import multiprocess

    pids = {
        int(m.group(1))
        for f in Path(directory).glob("gauge_live*_*.db")
        if (m := _LIVE_GAUGE_FILE.fullmatch(f.name))
    }
    dead = sorted(pid for pid in pids if pid != os.getpid() and not running(pid))
    for pid in dead:
        # workers restarted together race for the same files: the one that loses has nothing to do
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def forget_this_worker() -> None:
    """At a worker's graceful shutdown: drop its live-gauge files, so that its last values
    stop counting the moment it is gone (what ``forget_dead_workers`` does for a killed one)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """Every worker's samples in the Prometheus text format (the worker processes write
    them to files under ``PROMETHEUS_MULTIPROC_DIR``, which BentoML sets)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # outside `bentoml serve`
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
