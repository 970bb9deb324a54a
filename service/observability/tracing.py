"""Tracing cheap enough to leave on: W3C trace context on every request, spans for a sample.

Every HTTP request and gRPC call is looked at for a ``traceparent`` (``begin``): its trace id
goes into the log lines (``context.TRACE``) and back to the caller (``traceresponse``). The
sampling decision is made here, without the OpenTelemetry SDK: ``ParentBased(TraceIdRatioBased)``
by default (a caller's sampled flag is always followed; a call without one is sampled at
``CROP_YIELD_TRACE_RATIO``), or what ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``
name (the specification's built-in samplers). Only a sampled request touches the SDK: a
server span, and children made afterwards from timestamps the request recorded as it went
(``Trace.mark``): ``decode`` (request in, to the model call), ``predict`` (the model call,
with the rows of its batch), ``encode`` (the model's answer to the response's end). Spans go
out over OTLP (HTTP/protobuf) from a batch processor's thread, configured by the usual
``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*`` variables.

Spans are made only when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` turns them off): a
service without a collector would otherwise log failed exports. An unsampled request costs a
header look-up, a random number and a comparison; BentoML's own OpenTelemetry middleware is
kept from recording any request (service.service).
"""

from __future__ import annotations

import os
import random
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
"""W3C trace context, version 00 and later versions read as 00 (the specification's rule)."""
SAMPLED = 0x01
RATIO_BITS = 1 << 64
SAMPLERS = {
    # OTEL_TRACES_SAMPLER: (follows a parent's flag, ratio for calls without one or None: the arg)
    "always_on": (False, 1.0),
    "always_off": (False, 0.0),
    "traceidratio": (False, None),
    "parentbased_always_on": (True, 1.0),
    "parentbased_always_off": (True, 0.0),
    "parentbased_traceidratio": (True, None),
}

TRACE: ContextVar[Trace | None] = ContextVar("crop_yield_trace", default=None)
"""The request's trace context (None: the request had no traceparent and was not sampled)."""


@dataclass(slots=True)
class Trace:
    """One request's trace context, and what its spans need when it is sampled."""

    trace_id: int
    parent_id: int | None
    """The caller's span id (None: no traceparent came in)."""
    sampled: bool
    span: Any = None
    """The server span, while a sampled request runs."""
    marks: dict[str, int] = field(default_factory=dict)
    """Nanosecond timestamps the request recorded: predict_start, predict_end."""
    rows: int = 0

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def traceresponse(self) -> str:
        """The ``traceresponse`` header: this service's span in the trace (the caller's own
        span id where this request was not sampled and has no span)."""
        span_id = self.span.get_span_context().span_id if self.span is not None else self.parent_id or 0
        return f"00-{self.trace_id:032x}-{span_id:016x}-{SAMPLED if self.sampled else 0:02x}"

    def mark(self, name: str, rows: int = 0) -> None:
        self.marks[name] = time.time_ns()
        if rows:
            self.rows = rows


def parse(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a ``traceparent`` header, or None when absent
    or malformed (ignored then, as the specification says: a new trace starts)."""
    if value is None:
        return None
    found = TRACEPARENT.fullmatch(value.strip())
    if found is None or found.group(1) == "ff" or (found.group(1) == "00" and found.group(5)):
        return None
    trace_id, parent_id = int(found.group(2), 16), int(found.group(3), 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, bool(int(found.group(4), 16) & SAMPLED)


@dataclass(frozen=True)
class Sampler:
    """``ParentBased(TraceIdRatioBased(ratio))`` (or the plain ratio sampler): the same
    decisions as the SDK's, made without building its Context objects."""

    parent_based: bool
    ratio: float

    @classmethod
    def from_environment(cls, default_ratio: float) -> Sampler:
        name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        if name not in SAMPLERS:
            return cls(True, default_ratio)
        parent_based, ratio = SAMPLERS[name]
        if ratio is None:
            try:
                ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
            except ValueError:
                ratio = 1.0  # the specification's default for a bad argument
        return cls(parent_based, min(max(ratio, 0.0), 1.0))

    def sampled(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """``parent_sampled``: the caller's flag, None without a caller's context."""
        if self.parent_based and parent_sampled is not None:
            return parent_sampled
        # TraceIdRatioBased: the trace id's low 64 bits below ratio · 2^64
        return (trace_id & (RATIO_BITS - 1)) < self.ratio * RATIO_BITS


class Tracer:
    """One per worker: the sampler, and (once ``start`` ran, in the worker) the SDK's tracer."""

    def __init__(self, sampler: Sampler, service_name: str, export: bool) -> None:
        """``export``: spans go out (an OTLP endpoint is configured); without it, trace
        context still reaches the logs and the ``traceresponse``, and no span is made."""
        self.sampler = sampler
        self.service_name = service_name
        self.export = export and (sampler.ratio > 0 or sampler.parent_based)
        self._tracer: Any = None
        self._provider: Any = None

    @classmethod
    def from_environment(cls, default_ratio: float, service_name: str) -> Tracer:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        off = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        return cls(Sampler.from_environment(default_ratio), service_name, bool(endpoint) and not off)

    def start(self) -> None:
        """The SDK's provider with an OTLP exporter (in the worker: its thread and
        connection are the worker's own)."""
        if not self.export or self._provider is not None:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", self.service_name)})
        # The decision is already made (Sampler): the SDK records whatever it is handed.
        self._provider = TracerProvider(sampler=ALWAYS_ON, resource=resource)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("crop_yield")

    def shutdown(self) -> None:
        """Send what is queued (bounded by the exporter's timeout) and stop the thread."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None

    def begin(self, traceparent: str | None) -> Trace | None:
        """The request's trace context, or None when the request is neither traced by its
        caller nor sampled (the common case: nothing more to do). A sampled one (``sampled``)
        gets its server span from ``open``, once the caller knows its name."""
        parent = parse(traceparent)
        if parent is None:
            if self._tracer is None:
                return None
            trace_id = random.getrandbits(128) or 1
            if not self.sampler.sampled(trace_id, None):
                return None
            trace = Trace(trace_id, None, True)
        else:
            trace_id, parent_id, parent_sampled = parent
            # without an exporter (not started) nothing is recorded here: say so downstream
            sampled = self._tracer is not None and self.sampler.sampled(trace_id, parent_sampled)
            trace = Trace(trace_id, parent_id, sampled)
        TRACE.set(trace)
        return trace

    def open(self, trace: Trace, name: str, attributes: dict[str, Any]) -> None:
        """Start a sampled request's server span (its name and attributes are built only here)."""
        trace.span = self._server_span(trace, name, attributes)

    def _server_span(self, trace: Trace, name: str, attributes: dict[str, Any]) -> Any:
        from opentelemetry import trace as api
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        context = None
        if trace.parent_id is not None:
            remote = SpanContext(trace.trace_id, trace.parent_id, True, TraceFlags(SAMPLED))
            context = api.set_span_in_context(NonRecordingSpan(remote))
        span = self._tracer.start_span(name, context=context, kind=SpanKind.SERVER, attributes=attributes)
        trace.trace_id = span.get_span_context().trace_id  # a root's: the SDK drew its own id
        return span

    def end(self, trace: Trace, status: int | str, error: bool) -> None:
        """End a sampled request's server span with its children, from the marks."""
        span = trace.span
        if span is None:
            return
        from opentelemetry import trace as api
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        start = span.start_time
        context = api.set_span_in_context(span)
        begin_predict = trace.marks.get("predict_start")
        end_predict = trace.marks.get("predict_end")
        if begin_predict is not None and end_predict is not None:
            for child, t0, t1, attributes in (
                ("decode", start, begin_predict, {}),
                ("predict", begin_predict, end_predict, {"crop_yield.batch_rows": trace.rows}),
                ("encode", end_predict, end, {}),
            ):
                self._tracer.start_span(child, context=context, start_time=t0, attributes=attributes).end(t1)
        key = "http.response.status_code" if isinstance(status, int) else "rpc.grpc.status_code"
        span.set_attribute(key, status)
        if error:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end)
        trace.span = None
