"""Triton's statistics extension: per model version, the counts and cumulative times Triton
reports for inference requests, over every prediction route, summed over the workers.

A prediction call's front end opens a ``Call`` when the request begins (HTTP: the
prediction routes, in ``service.http.traffic.RequestContext``; gRPC: ModelInfer, in
``service.grpc.layers.observed``) and closes it with its outcome; the data plane notes on it
which version answered, when the model part began and ended, and how long the model call
took. Closing adds to the worker's plain accumulators (a few additions); the plane's
once-a-second flush adds them to Prometheus counters, which ``read`` sums over every
worker's files, as ``/metrics`` does. As Triton's, the times are of the server's parts of a
request:

- ``success`` / ``fail``: requests answered or refused, and their whole time in the server;
- ``compute_input``: from the request's start to the model part (reading and decoding it);
- ``queue``: waiting to be batched with other calls (0 for calls that go straight to the model);
- ``compute_infer``: the model call (for a batched call, its batch's);
- ``compute_output``: from the model's answer to the call's end (bounds, encoding, writing);

``inference_count`` is rows predicted, ``execution_count`` model calls, and
``last_inference`` the last request's end, in milliseconds since the epoch.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from service.observability import metrics

STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
UNNAMED = ""
"""The version of calls refused before one was chosen: reported under the default version."""


class Call:
    """One prediction request's times (``time.perf_counter``), and the version that answered."""

    __slots__ = ("infer_s", "model_end", "model_start", "started", "version")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.model_start = 0.0
        self.model_end = 0.0
        self.infer_s = 0.0
        self.version = UNNAMED


CALL: ContextVar[Call | None] = ContextVar("crop_yield_call", default=None)


@dataclass
class Tally:
    """One version's numbers since the last flush."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    rows: int = 0
    executions: int = 0
    last_s: float = 0.0


class Statistics:
    """The worker's tallies, by version; and the gRPC calls started, by method."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}
        self.grpc_started: dict[str, int] = {}
        """gRPC calls begun, by method, before their message arrived: the transport refuses
        some (too large, inflated past the limit) before any of the service's code sees
        them, so started minus answered (``crop_yield_grpc_requests_total``) counts those."""

    def grpc_call_started(self, method: str) -> None:
        self.grpc_started[method] = self.grpc_started.get(method, 0) + 1

    def _tally(self, version: str) -> Tally:
        tally = self.tallies.get(version)
        if tally is None:
            tally = self.tallies[version] = Tally()
        return tally

    def begin(self) -> Call:
        call = Call()
        CALL.set(call)
        return call

    def end(self, call: Call, ok: bool) -> None:
        now = time.perf_counter()
        tally = self._tally(call.version)
        outcome = "success" if ok else "fail"
        tally.counts[outcome] += 1
        tally.seconds[outcome] += now - call.started
        if call.model_end:  # it reached the model
            counts, seconds = tally.counts, tally.seconds
            for stage in ("compute_input", "queue", "compute_infer", "compute_output"):
                counts[stage] += 1
            seconds["compute_input"] += call.model_start - call.started
            seconds["queue"] += max(0.0, call.model_end - call.model_start - call.infer_s)
            seconds["compute_infer"] += call.infer_s
            seconds["compute_output"] += now - call.model_end
        tally.last_s = time.time()

    def executed(self, version: str, rows: int) -> None:
        """One model call of ``rows`` rows."""
        tally = self._tally(version)
        tally.executions += 1
        tally.rows += rows

    def flush(self) -> None:
        """Add what was tallied since the last flush to the Prometheus series."""
        started, self.grpc_started = self.grpc_started, {}
        for method, n in started.items():
            metrics.grpc_calls_started().labels(method=method).inc(n)
        tallies, self.tallies = self.tallies, {}
        for version, tally in tallies.items():
            for stage in STAGES:
                if tally.counts[stage]:
                    metrics.inference_requests().labels(version=version, stage=stage).inc(tally.counts[stage])
                    metrics.inference_seconds().labels(version=version, stage=stage).inc(tally.seconds[stage])
            if tally.executions:
                metrics.model_executions().labels(version=version).inc(tally.executions)
                metrics.model_execution_rows().labels(version=version).inc(tally.rows)
            if tally.last_s:
                metrics.last_inference().labels(version=version).set(tally.last_s)


STATISTICS = Statistics()
"""The worker's (one per process, as its metrics are)."""


def read(model: str, versions: list[str], default: str) -> list[dict[str, Any]]:
    """Triton's ``model_stats`` for the ``versions`` asked, summed over the workers; calls
    refused before a version was chosen count under ``default``."""
    STATISTICS.flush()  # this worker's latest; the others' are at most a flush old
    found: dict[str, dict[str, Any]] = {}
    for name, labels, value in metrics.samples(
        (
            "crop_yield_inference_requests_total",
            "crop_yield_inference_seconds_total",
            "crop_yield_model_executions_total",
            "crop_yield_model_execution_rows_total",
            "crop_yield_last_inference_timestamp_seconds",
        )
    ):
        version = labels.get("version", UNNAMED) or default
        entry = found.setdefault(version, {"counts": {}, "ns": {}, "rows": 0, "executions": 0, "last": 0})
        stage = labels.get("stage")
        if name == "crop_yield_inference_requests_total":
            entry["counts"][stage] = entry["counts"].get(stage, 0) + value
        elif name == "crop_yield_inference_seconds_total":
            entry["ns"][stage] = entry["ns"].get(stage, 0) + value * 1e9
        elif name == "crop_yield_model_executions_total":
            entry["executions"] += value
        elif name == "crop_yield_model_execution_rows_total":
            entry["rows"] += value
        else:
            entry["last"] = max(entry["last"], value * 1000)
    stats = []
    for version in versions:
        entry = found.get(version, {"counts": {}, "ns": {}, "rows": 0, "executions": 0, "last": 0})
        stats.append(
            {
                "name": model,
                "version": version,
                "last_inference": int(entry["last"]),
                "inference_count": int(entry["rows"]),
                "execution_count": int(entry["executions"]),
                "inference_stats": {
                    stage: {"count": int(entry["counts"].get(stage, 0)), "ns": int(entry["ns"].get(stage, 0))}
                    for stage in (*STAGES, "cache_hit", "cache_miss")
                },
                "batch_stats": [],
                "memory_usage": [],
            }
        )
    return stats
