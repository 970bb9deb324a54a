"""Trace context without a server: traceparent parsing (the W3C rules), the sampler's
decisions against the OpenTelemetry SDK's own, and the spans of a sampled request."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace as api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from service.observability import tracing
from service.observability.tracing import Sampler, Tracer, parse

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE_ID}-{PARENT}-01", (int(TRACE_ID, 16), int(PARENT, 16), True)),
        (f"00-{TRACE_ID}-{PARENT}-00", (int(TRACE_ID, 16), int(PARENT, 16), False)),
        (f" 00-{TRACE_ID}-{PARENT}-03 ", (int(TRACE_ID, 16), int(PARENT, 16), True)),  # other flag bits
        (f"01-{TRACE_ID}-{PARENT}-01-future", (int(TRACE_ID, 16), int(PARENT, 16), True)),  # a later version
        (None, None),
        ("", None),
        (f"00-{TRACE_ID}-{PARENT}-01-extra", None),  # version 00 has exactly four parts
        (f"ff-{TRACE_ID}-{PARENT}-01", None),  # version ff is invalid
        (f"00-{'0' * 32}-{PARENT}-01", None),  # all-zero ids are invalid
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID.upper()}-{PARENT}-01", None),  # lower-case hex only
        (f"00-{TRACE_ID[:-1]}-{PARENT}-01", None),
    ],
)
def test_traceparent_parsing_follows_the_w3c_rules(
    header: str | None, expected: tuple[int, int, bool] | None
) -> None:
    assert parse(header) == expected


def sdk_decision(sampler: object, trace_id: int, parent_sampled: bool | None) -> bool:
    context = None
    if parent_sampled is not None:
        flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled else TraceFlags.DEFAULT)
        context = api.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, 1, True, flags)))
    result = sampler.should_sample(context, trace_id, "x")  # type: ignore[attr-defined]
    return bool(result.decision == Decision.RECORD_AND_SAMPLE)


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.37, 1.0])
def test_decisions_equal_the_sdks_parent_based_ratio_sampler(ratio: float) -> None:
    ours, theirs = Sampler(True, ratio), ParentBased(TraceIdRatioBased(ratio))
    rng = random.Random(ratio)
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        for parent in (None, True, False):
            assert ours.sampled(trace_id, parent) == sdk_decision(theirs, trace_id, parent)


@pytest.mark.parametrize(
    ("sampler", "arg", "expected"),
    [
        (None, None, Sampler(True, 0.05)),  # unset: the setting's ratio, parent based
        ("always_on", None, Sampler(False, 1.0)),
        ("parentbased_always_off", None, Sampler(True, 0.0)),
        ("traceidratio", "0.25", Sampler(False, 0.25)),
        ("parentbased_traceidratio", "2", Sampler(True, 1.0)),  # clamped
        ("parentbased_traceidratio", "half", Sampler(True, 1.0)),  # a bad arg: the default, 1
        ("jaeger_remote", None, Sampler(True, 0.05)),  # not a built-in: the setting's
    ],
)
def test_the_otel_sampler_variables_are_honoured(
    monkeypatch: pytest.MonkeyPatch, sampler: str | None, arg: str | None, expected: Sampler
) -> None:
    for name, value in (("OTEL_TRACES_SAMPLER", sampler), ("OTEL_TRACES_SAMPLER_ARG", arg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Sampler.from_environment(0.05) == expected


def recording_tracer(ratio: float) -> tuple[Tracer, InMemorySpanExporter]:
    tracer = Tracer(Sampler(True, ratio), "crop_yield", export=True)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer._provider, tracer._tracer = provider, provider.get_tracer("test")
    return tracer, exporter


def test_a_sampled_request_gets_a_server_span_and_decode_predict_encode_children() -> None:
    tracer, exporter = recording_tracer(0.0)
    trace = tracer.begin(f"00-{TRACE_ID}-{PARENT}-01")
    assert trace is not None
    assert trace.sampled
    tracer.open(trace, "POST /predict", {"url.path": "/predict"})
    assert trace.span is not None
    assert tracing.TRACE.get() is trace
    trace.mark("predict_start", 3)
    trace.mark("predict_end")
    response = trace.traceresponse()
    tracer.end(trace, 200, error=False)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /predict", "decode", "predict", "encode"}
    server = spans["POST /predict"]
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.parent is not None
    assert server.parent.span_id == int(PARENT, 16)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    for child in ("decode", "predict", "encode"):
        assert spans[child].parent is not None
        assert spans[child].parent.span_id == server.context.span_id
    assert spans["predict"].attributes == {"crop_yield.batch_rows": 3}
    assert spans["decode"].end_time <= spans["predict"].start_time <= spans["encode"].start_time
    assert response == f"00-{TRACE_ID}-{server.context.span_id:016x}-01"


def test_a_callers_unsampled_flag_is_followed_and_its_context_echoed() -> None:
    tracer, exporter = recording_tracer(1.0)  # would sample every call without a caller's flag
    trace = tracer.begin(f"00-{TRACE_ID}-{PARENT}-00")
    assert trace is not None
    assert not trace.sampled
    assert trace.span is None
    assert trace.traceresponse() == f"00-{TRACE_ID}-{PARENT}-00"
    tracer.end(trace, 200, error=False)
    assert exporter.get_finished_spans() == ()


def test_without_a_traceparent_the_ratio_decides_and_the_unsampled_cost_nothing() -> None:
    tracer, exporter = recording_tracer(0.0)
    assert tracer.begin(None) is None
    tracer, exporter = recording_tracer(1.0)
    trace = tracer.begin(None)
    assert trace is not None
    assert trace.sampled
    tracer.open(trace, "POST /predict", {})
    tracer.end(trace, 503, error=True)
    (span,) = exporter.get_finished_spans()  # no model call: no children
    assert span.parent is None
    assert span.context.trace_id == trace.trace_id
    assert not span.status.is_ok


def test_without_an_exporter_trace_context_still_flows_but_no_span_is_made() -> None:
    tracer = Tracer(Sampler(True, 1.0), "crop_yield", export=False)
    tracer.start()  # nothing to start
    assert tracer.begin(None) is None
    trace = tracer.begin(f"00-{TRACE_ID}-{PARENT}-01")
    assert trace is not None
    assert not trace.sampled
    assert trace.span is None
    assert trace.traceresponse() == f"00-{TRACE_ID}-{PARENT}-00"  # not recorded here


def test_spans_are_exported_only_with_an_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert not Tracer.from_environment(0.01, "crop_yield").export
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert Tracer.from_environment(0.01, "crop_yield").export
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not Tracer.from_environment(0.01, "crop_yield").export
