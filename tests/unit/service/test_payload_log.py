"""Payload logging's parts without a served process (service.observability.payloads,
service.http.payloads, service.grpc.payloads, service.grpc.v2_json): sampling, the events'
CloudEvents headers as the SDK reads them, the queue's bounds and drop counting, the retry
policy, and the sender against a real local sink."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import grpc
import numpy as np
import pytest
from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from prometheus_client import REGISTRY
from pydantic import ValidationError
from starlette.routing import compile_path

from devtools.grpc_requests import infer_request
from devtools.served import free_port
from service.grpc import codec as grpc_codec
from service.grpc import v2_json
from service.grpc.layers import Sized
from service.grpc.payloads import HTTP_STATUS, SMALL_BYTES, GrpcCall, payload_logged
from service.http.paths import V2_INFER
from service.http.payloads import JSON_API, V2_REST, PayloadLogging, protocol_of
from service.http.traffic import DEADLINE
from service.inference.routing import Split
from service.observability import context
from service.observability.delivery import Outbox, RetryPolicy
from service.observability.payloads import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    Call,
    Event,
    Identity,
    Payload,
    PayloadLog,
    render,
    sampled,
)
from service.settings import Settings
from service.v2 import codec as v2_codec
from service.v2.operations import OPERATIONS
from tests.v2_cases import binary_request

IDENTITY = Identity(
    source="http://pod-1:3000/", service_name="crop-yield", endpoint="default", namespace="ns"
)
IDS = [f"request-{i}" for i in range(10_000)]
FAST = RetryPolicy(retries=3, backoff_s=0.001)


def parsed(event: Event, identity: Identity = IDENTITY) -> Any:
    """The event as the CloudEvents SDK reads it from the HTTP message the sender POSTs."""
    headers, body = render(event, identity)
    return from_http_event(HTTPMessage(headers=headers, body=body))


def raw_data(event: Any) -> bytes:
    """An event's binary data (the SDK hands over octet-stream data that decodes as UTF-8 as str)."""
    data = event.get_data()
    return data if isinstance(data, bytes) else b"" if data is None else str(data).encode()


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("crop_yield_payload_events_total", {"outcome": outcome}) or 0.0


# -- sampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_sampling_keeps_about_the_rate_and_the_same_ids_every_time(rate: float) -> None:
    kept = [i for i in IDS if sampled(i, rate)]
    assert abs(len(kept) / len(IDS) - rate) < 0.02
    assert kept == [i for i in IDS if sampled(i, rate)]  # a hash, not a draw: every worker agrees
    assert all(sampled(i, 1.0) for i in IDS[:100])
    assert not any(sampled(i, 0.0) for i in IDS[:100])


def test_sampling_does_not_follow_the_canary_split() -> None:
    """Canary weights hash the same request id (crc32): the sampled calls must still reach
    each version in its share, not all of one version."""
    split = Split({"stable": 90, "canary": 10}, ["stable", "canary"])
    for rate in (0.1, 0.5):
        kept = [i for i in IDS if sampled(i, rate)]
        share = sum(split.pick(i) == "canary" for i in kept) / len(kept)
        assert abs(share - 0.1) < 0.03, (rate, share)


# -- the HTTP middleware ---------------------------------------------------------------------


def answer_with(
    status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None, delay: float = 0
) -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        assert message["type"] == "http.request"  # the body is passed on whole
        if delay:
            await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


def scope_of(
    path: str, headers: list[tuple[bytes, bytes]] | None = None, method: str = "POST"
) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


def call_through(
    log: PayloadLog, app: Any, scope: dict[str, Any], body: bytes, request_id: str = "r-1"
) -> list[dict[str, Any]]:
    """Run one request through ``PayloadLogging``; the messages the client got."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        context.begin(request_id, scope["path"])
        await PayloadLogging(app, log)(scope, receive, send)

    asyncio.run(run())
    return sent


def queued(log: PayloadLog, sink: int = 0) -> list[Event]:
    return [event for event, _ in log.sinks[sink].outbox.waiting]


def payload_log(**options: Any) -> PayloadLog:
    return PayloadLog(["http://127.0.0.1:9/"], IDENTITY, **options)


JSON_ANSWER = [(b"content-type", b"application/json"), (b"x-model-version", b"v7")]
PREDICTION = b'{"predictions": [{"apples": 57.3, "oranges": 69.5}], "model": "crop_yield:v7"}'


def test_a_json_api_call_becomes_a_request_and_a_response_event() -> None:
    log = payload_log()
    body = b'{"inputs": [{"temperature": 73, "rainfall": 67, "humidity": 43}]}'
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    scope = scope_of("/predict", [(b"content-type", b"application/json"), (b"traceparent", trace.encode())])
    sent = call_through(log, answer_with(200, PREDICTION, JSON_ANSWER), scope, body, "r-42")
    assert sent[1]["body"] == PREDICTION  # the client's answer is untouched
    request, response = (parsed(e) for e in queued(log))
    for event in (request, response):
        assert event.get_specversion() == "1.0"
        assert event.get_source() == "http://pod-1:3000/"
        assert event.get_subject() == "/predict"
        assert event.get_datacontenttype() == "application/json"
        extensions = {
            k: event.get_extension(k)
            for k in (
                "inferenceservicename",
                "namespace",
                "component",
                "endpoint",
                "requestid",
                "modelversion",
                "statuscode",
                "protocol",
                "traceparent",
            )
        }
        assert extensions == {
            "inferenceservicename": "crop-yield",
            "namespace": "ns",
            "component": "predictor",
            "endpoint": "default",
            "requestid": "r-42",
            "modelversion": "v7",
            "statuscode": "200",
            "protocol": JSON_API,
            "traceparent": trace,
        }
    assert request.get_type() == REQUEST_TYPE
    assert response.get_type() == RESPONSE_TYPE
    assert request.get_data() == json.loads(body)
    assert response.get_data() == json.loads(PREDICTION)
    assert request.get_id() != response.get_id()
    assert request.get_time() <= response.get_time()


def test_kserve_ids_give_both_events_the_request_id() -> None:
    log = payload_log()
    call_through(log, answer_with(200, PREDICTION, JSON_ANSWER), scope_of("/predict"), b"{}", "r-7")
    kserve = dataclasses.replace(IDENTITY, kserve_ids=True)
    assert [parsed(e, kserve).get_id() for e in queued(log)] == ["r-7", "r-7"]


def test_an_event_keeps_its_id_for_its_retries_and_other_sinks() -> None:
    log = payload_log()
    call_through(log, answer_with(200, PREDICTION, JSON_ANSWER), scope_of("/predict"), b"{}")
    event = queued(log)[0]
    assert render(event, IDENTITY)[0]["ce-id"] == render(event, IDENTITY)[0]["ce-id"]


def test_binary_tensor_bodies_are_logged_raw_with_their_json_header_length() -> None:
    log = payload_log()
    body, header_length = binary_request(np.array([[73.0, 67.0, 43.0]]))
    scope = scope_of(
        "/v2/models/crop_yield/versions/v7/infer",
        [(b"inference-header-content-length", str(header_length).encode())],
    )
    answer = b'{"model_name":"crop_yield","outputs":[]}' + b"\x00" * 8
    answer_headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"40"),
    ]
    call_through(log, answer_with(200, answer, answer_headers), scope, body)
    request, response = (parsed(e) for e in queued(log))
    assert raw_data(request) == body
    assert request.get_datacontenttype() == "application/octet-stream"
    assert request.get_extension("inferenceheadersize") == str(header_length)
    assert request.get_extension("protocol") == V2_REST
    assert request.get_subject() == "/v2/models/crop_yield/versions/v7/infer"
    assert (raw_data(response), response.get_extension("inferenceheadersize")) == (answer, "40")


def test_odd_characters_in_attributes_are_percent_encoded() -> None:
    log = payload_log()
    call_through(log, answer_with(200, PREDICTION, JSON_ANSWER), scope_of("/predict"), b"{}", 'a%"b')
    event = queued(log)[0]
    assert render(event, IDENTITY)[0]["ce-requestid"] == "a%25%22b"
    assert parsed(event).get_extension("requestid") == 'a%"b'


def test_error_answers_are_logged_with_their_status() -> None:
    log = payload_log()
    error = b'{"error": "invalid request: input \'rainfall\' ..."}'
    call_through(
        log, answer_with(400, error, JSON_ANSWER[:1]), scope_of("/v2/models/crop_yield/infer"), b"{}"
    )
    request, response = (parsed(e) for e in queued(log))
    assert request.get_extension("statuscode") == response.get_extension("statuscode") == "400"
    assert response.get_data() == json.loads(error)
    assert response.get_extension("modelversion") is None


def test_a_call_cut_by_the_deadline_is_logged_as_504() -> None:
    log = payload_log()
    scope = scope_of("/predict")

    async def run() -> None:
        scope[DEADLINE] = asyncio.get_running_loop().time() + 0.05
        context.begin("r-1", "/predict")

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Any) -> None:
            pass

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await PayloadLogging(answer_with(200, b"late", delay=1), log)(scope, receive, send)

    asyncio.run(run())
    _request, response = (parsed(e) for e in queued(log))
    assert response.get_extension("statuscode") == "504"
    assert raw_data(response) == b""


def test_an_app_that_fails_is_logged_as_500() -> None:
    log = payload_log()

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        call_through(log, broken, scope_of("/predict_columns"), b"{}")
    assert [parsed(e).get_extension("statuscode") for e in queued(log)] == ["500", "500"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/metadata"),
        ("GET", "/predict"),
        ("POST", "/feedback"),
        ("POST", "/v2/models/crop_yield"),
        ("POST", "/v2/repository/models/crop_yield/load"),
    ],
)
def test_other_routes_are_not_logged(method: str, path: str) -> None:
    log = payload_log()
    call_through(log, answer_with(200, b"{}"), scope_of(path, method=method), b"{}")
    assert queued(log) == []


def test_the_v2_infer_pattern_is_the_route_table_s() -> None:
    infer = [compile_path(op.path)[0] for op in OPERATIONS if op.handler == "infer"]
    paths = [
        "/v2/models/crop_yield/infer",
        "/v2/models/crop_yield/versions/abc/infer",
        "/v2/models/versions/infer",
        "/v2/models/crop_yield/versions/infer",
        "/v2/models/crop_yield/x/y/infer",
        "/v2/models//infer",
        "/v2/models/crop_yield/infer/",
        "/v2/models/crop_yield/ready",
    ]
    for path in paths:
        assert (V2_INFER.fullmatch(path) is not None) == any(p.fullmatch(path) for p in infer), path
        assert (protocol_of(path) == V2_REST) == any(p.fullmatch(path) for p in infer), path


def test_a_call_s_request_and_response_are_kept_or_dropped_together() -> None:
    log = payload_log(rate=0.5)
    for request_id in IDS[:200]:
        call_through(log, answer_with(200, PREDICTION, JSON_ANSWER), scope_of("/predict"), b"{}", request_id)
    events = queued(log)
    kinds: dict[str, list[str]] = {}
    for event in events:
        kinds.setdefault(event.call.request_id, []).append(event.kind)
    assert all(k == ["request", "response"] for k in kinds.values())
    assert set(kinds) == {i for i in IDS[:200] if sampled(i, 0.5)}
    assert 70 < len(kinds) < 130


@pytest.mark.parametrize(("mode", "kinds"), [("request", ["request"]), ("response", ["response"])])
def test_modes_choose_the_events(mode: Any, kinds: list[str]) -> None:
    log = payload_log(mode=mode)
    call_through(log, answer_with(200, PREDICTION, JSON_ANSWER), scope_of("/predict"), b"{}")
    assert [e.kind for e in queued(log)] == kinds


# -- the queue and what it drops -------------------------------------------------------------


class OfSize(Call):
    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__("json-api", "/predict", "r", 0.0, 0.0, size, size)

    def request(self) -> Payload:
        return Payload(b"x" * self.request_size, "application/octet-stream")

    response = request

    def attributes(self) -> dict[str, str]:
        return {"statuscode": "200"}


def test_the_queue_is_bounded_by_events_and_by_bytes() -> None:
    by_count: Outbox[Event] = Outbox(max_events=3, max_bytes=1_000)
    assert [by_count.offer(Event(OfSize(1), "request", 1)) for _ in range(4)] == [True, True, True, False]
    by_bytes: Outbox[Event] = Outbox(max_events=100, max_bytes=100)
    assert by_bytes.offer(Event(OfSize(60), "request", 60))
    assert not by_bytes.offer(Event(OfSize(60), "request", 60))
    assert by_bytes.offer(Event(OfSize(40), "request", 40))
    assert by_bytes.nbytes == 100
    event, attempt = by_bytes.take()
    assert (event.size, attempt, by_bytes.nbytes) == (60, 0, 100)  # in delivery: still holds its bytes
    by_bytes.again(event, 1)  # to be retried: first in line again
    assert by_bytes.waiting[0] == (event, 1)
    by_bytes.done(by_bytes.take()[0])
    assert by_bytes.nbytes == 40
    assert by_bytes.offer(Event(OfSize(60), "request", 60))


def test_a_full_queue_drops_and_counts() -> None:
    log = payload_log(max_events=4)
    before = counted("dropped")
    for _ in range(5):  # two events each: 4 queued, 6 dropped
        log.record(OfSize(10))
    log.publish()
    assert len(queued(log)) == 4
    assert counted("dropped") - before == 6


def test_each_sink_has_its_own_queue() -> None:
    log = PayloadLog(["http://a.invalid/", "http://b.invalid/"], IDENTITY, max_events=2)
    log.sinks[0].outbox.offer(Event(OfSize(1), "request", 1))
    log.record(OfSize(1))
    assert (len(queued(log, 0)), len(queued(log, 1))) == (2, 2)
    assert queued(log, 0)[1] is queued(log, 1)[0]  # one event object: one id at every sink


# -- the retry policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "retried"),
    [
        (500, True),
        (502, True),
        (503, True),
        ("connection", True),
        (400, False),
        (404, False),
        (413, False),
        (429, False),
        (301, False),
        ("timeout", False),
    ],
)
def test_only_5xx_and_connection_errors_are_retried(answer: Any, retried: bool) -> None:
    assert RetryPolicy.retryable(answer) is retried


def test_retries_back_off_exponentially() -> None:
    policy = RetryPolicy(retries=3, backoff_s=0.1)
    assert [policy.delay(r) for r in range(3)] == pytest.approx([0.1, 0.2, 0.4])


# -- the sender against a real sink ------------------------------------------------------------


class Sink:
    """A local HTTP sink: answers ``statuses`` in turn (then 200), after ``delay`` s each."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0) -> None:
        self.statuses = list(statuses or [])
        self.delay = delay
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    @asynccontextmanager
    async def serving(self, port: int = 0) -> AsyncIterator[str]:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            await runner.cleanup()


async def deliver(log: PayloadLog, calls: int = 1, flush: float = 5.0) -> None:
    log.start()
    for _ in range(calls):
        log.record(OfSize(5))
    await log.close(flush)


def test_events_are_delivered_and_counted() -> None:
    sink = Sink()
    before = counted("sent")

    async def run() -> None:
        async with sink.serving() as url:
            await deliver(PayloadLog([url], IDENTITY), calls=10)

    asyncio.run(run())
    assert len(sink.received) == 20
    assert counted("sent") - before == 20
    headers, body = sink.received[0]
    event = from_http_event(HTTPMessage(headers=headers, body=body))
    assert event.get_type() in (REQUEST_TYPE, RESPONSE_TYPE)
    assert raw_data(event) == b"xxxxx"
    assert len({h["ce-id"] for h, _ in sink.received}) == 20


def test_bulk_events_reach_every_sink_whole_with_one_id() -> None:
    """Rendered in a thread (a bulk gRPC call's JSON would hold the loop), with the id given
    on the loop first, so that both sinks get the same one."""
    sinks = [Sink(), Sink()]

    async def run() -> None:
        async with sinks[0].serving() as first, sinks[1].serving() as second:
            log = PayloadLog([first, second], IDENTITY, mode="request")
            log.start()
            log.record(OfSize(2 << 20))
            await log.close(5)

    asyncio.run(run())
    (a_headers, a_body), (b_headers, b_body) = sinks[0].received[0], sinks[1].received[0]
    assert len(a_body) == len(b_body) == 2 << 20
    assert a_headers["ce-id"] == b_headers["ce-id"]


def test_5xx_is_retried_with_the_same_event_id() -> None:
    sink = Sink([503, 500])

    async def run() -> None:
        async with sink.serving() as url:
            await deliver(PayloadLog([url], IDENTITY, mode="request", policy=FAST, window=1))

    asyncio.run(run())
    assert len(sink.received) == 3
    assert len({h["ce-id"] for h, _ in sink.received}) == 1


def test_4xx_is_not_retried_and_counts_as_failed() -> None:
    sink = Sink([400])
    before = counted("failed")

    async def run() -> None:
        async with sink.serving() as url:
            await deliver(PayloadLog([url], IDENTITY, mode="request", policy=FAST))

    asyncio.run(run())
    assert len(sink.received) == 1
    assert counted("failed") - before == 1


def test_a_dead_sink_fails_after_the_retries_and_a_live_one_still_gets_everything() -> None:
    sink = Sink()
    before = counted("failed")

    async def run() -> None:
        async with sink.serving() as url:
            dead = f"http://127.0.0.1:{free_port()}/"
            await deliver(PayloadLog([dead, url], IDENTITY, policy=FAST), calls=5)

    asyncio.run(run())
    assert len(sink.received) == 10
    assert counted("failed") - before == 10


def test_a_sink_down_drops_at_once_and_is_probed_until_it_answers() -> None:
    """Unreachable four times in a row (0.7 s of backoff), a sink is down: what waited
    fails, what comes is dropped without queueing (the worker's memory stays flat), and a
    probe about once a second finds it again when it listens."""
    port = free_port()
    sink = Sink()

    async def run() -> tuple[int, int, int, bool, int]:
        log = PayloadLog([f"http://127.0.0.1:{port}/"], IDENTITY, mode="request", policy=FAST)
        courier = log.sinks[0]
        log.start()
        log.record(OfSize(5))
        async with asyncio.timeout(5):
            while not courier.down:
                await asyncio.sleep(0.01)
        failed = log.counts["failed"]
        for _ in range(100):
            log.record(OfSize(5))
        queued_while_down, dropped = len(courier.outbox), log.counts["dropped"]
        async with sink.serving(port):
            async with asyncio.timeout(5):
                while courier.down:
                    await asyncio.sleep(0.05)
            log.record(OfSize(5))
            await log.close(5)
        return failed, queued_while_down, dropped, courier.down, len(sink.received)

    failed, queued_while_down, dropped, down, received = asyncio.run(run())
    assert (failed, queued_while_down, dropped) == (1, 0, 100)
    assert not down
    assert received == 1


def test_a_timeout_is_not_retried() -> None:
    sink = Sink(delay=0.4)

    async def run() -> None:
        async with sink.serving() as url:
            await deliver(PayloadLog([url], IDENTITY, mode="request", timeout=0.1, policy=FAST))

    asyncio.run(run())
    assert len(sink.received) == 1


def test_close_flushes_what_is_queued() -> None:
    sink = Sink(delay=0.02)

    async def run() -> None:
        async with sink.serving() as url:
            await deliver(PayloadLog([url], IDENTITY, window=2), calls=20)

    asyncio.run(run())
    assert len(sink.received) == 40


def test_close_gives_up_on_a_stuck_sink_in_time_and_counts_the_rest_dropped() -> None:
    sink = Sink(delay=1.0)
    before = counted("dropped")

    async def run() -> float:
        async with sink.serving() as url:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await deliver(PayloadLog([url], IDENTITY, window=2, timeout=10), calls=5, flush=0.3)
            return loop.time() - started

    assert asyncio.run(run()) < 0.8
    assert counted("dropped") - before == 10  # 2 cut in delivery, 8 never sent


# -- gRPC ----------------------------------------------------------------------------------------


ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]], dtype=np.float32)


@pytest.mark.parametrize("raw", [False, True])
def test_grpc_requests_are_written_as_the_v2_rest_json(raw: bool) -> None:
    request = infer_request(ROWS, raw, id="g1")
    request.outputs.add(name="apples")
    document = v2_json.request_document(request)
    assert json.loads(v2_json.dumps(document)) == {
        "id": "g1",
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": [2], "data": ROWS[:, j].tolist()}
            for j, name in enumerate(("temperature", "rainfall", "humidity"))
        ],
        "outputs": [{"name": "apples"}],
    }
    assert v2_json.rest_path(request) == "/v2/models/crop_yield/infer"


@pytest.mark.parametrize("raw", [False, True])
def test_grpc_answers_are_written_as_the_rest_route_answers_the_same_call(raw: bool) -> None:
    request = infer_request(ROWS, raw, id="g1")
    for name in ("apples", "oranges_lower", "extrapolated"):
        request.outputs.add(name=name)
    decoded, _ = grpc_codec.decode(request, 100)
    outputs = np.array([[57.32, 69.54], [53.8, 66.81]], dtype=np.float32)
    bounds = {"oranges_lower": np.array([60.1, 61.2], dtype=np.float32)}
    flags = np.array([False, True])
    answer = grpc_codec.encode(decoded, raw, outputs, "crop_yield", "v7", bounds, flags)
    rest, _ = v2_codec.encode_response(decoded, outputs, "crop_yield", "v7", bounds, flags)
    assert json.loads(v2_json.dumps(v2_json.response_document(answer))) == json.loads(rest)


def test_raw_bytes_that_do_not_fit_their_datatype_keep_only_their_size() -> None:
    request = infer_request(ROWS, raw=True)
    request.raw_input_contents[0] = b"\x00" * 7
    tensor = v2_json.request_document(request)["inputs"][0]
    assert "data" not in tensor
    assert tensor["parameters"] == {"binary_data_size": 7}


class Context:
    """What ``payload_logged`` asks of grpc.aio's ServicerContext."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self._code: Any = None
        self._details: str | None = None
        self.was_cancelled = False

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def code(self) -> Any:
        return self._code

    def details(self) -> str | None:
        return self._details

    def cancelled(self) -> bool:
        return self.was_cancelled

    def time_remaining(self) -> float:
        return 1.0

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details
        raise grpc.aio.AbortError()


def grpc_events(behaviour: Any, context_: Context, log: PayloadLog | None = None) -> list[Any]:
    log = log or payload_log()
    logged = payload_logged(behaviour, log)

    async def run() -> None:
        context.begin("g-1", "/inference.GRPCInferenceService/ModelInfer")
        request = infer_request(ROWS, model_version="v7")
        await logged(Sized(request, request.ByteSize()), context_)

    with suppress(grpc.aio.AbortError, asyncio.CancelledError):
        asyncio.run(run())
    return [parsed(e) for e in queued(log)]


def test_a_grpc_call_becomes_two_events_in_v2_json() -> None:
    async def answer(request: Any, context_: Any) -> Any:
        decoded, raw = grpc_codec.decode(request, 100)
        return grpc_codec.encode(decoded, raw, np.ones((2, 2), np.float32), "crop_yield", "v7")

    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    request, response = grpc_events(answer, Context((("traceparent", trace), ("x-request-id", "g-1"))))
    assert request.get_data()["inputs"][0]["data"] == ROWS[:, 0].tolist()
    assert response.get_data()["outputs"][0] == {
        "name": "apples",
        "datatype": "FP32",
        "shape": [2],
        "data": [1, 1],
    }
    for event in (request, response):
        assert event.get_extension("protocol") == "v2-grpc"
        assert event.get_extension("statuscode") == "200"
        assert event.get_extension("grpccode") == "OK"
        assert event.get_extension("modelversion") == "v7"
        assert event.get_extension("requestid") == "g-1"
        assert event.get_extension("traceparent") == trace
        assert event.get_subject() == "/v2/models/crop_yield/versions/v7/infer"


def test_a_refused_grpc_call_is_logged_with_its_status_and_message() -> None:
    async def refuse(request: Any, context_: Any) -> Any:
        await context_.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid request: input 'rainfall' ...")

    _request, response = grpc_events(refuse, Context())
    assert response.get_extension("statuscode") == "400"
    assert response.get_extension("grpccode") == "INVALID_ARGUMENT"
    assert response.get_data() == {"error": "invalid request: input 'rainfall' ..."}


def test_a_grpc_call_cut_by_the_request_deadline_is_deadline_exceeded() -> None:
    async def stuck(request: Any, context_: Any) -> Any:
        raise asyncio.CancelledError  # what the request deadline (layers.observed) does

    response = grpc_events(stuck, Context())[1]
    assert response.get_extension("grpccode") == "DEADLINE_EXCEEDED"
    assert response.get_extension("statuscode") == "504"


def test_every_grpc_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


@pytest.mark.parametrize("rows", [10, 10_000])
def test_grpc_events_count_the_bytes_of_their_messages(rows: int) -> None:
    """The request's length on the wire; the answer's exactly for a small call, and for a bulk
    one 8 bytes per element (protobuf's ByteSize would serialize it)."""
    request = infer_request(np.zeros((rows, 3), np.float32), raw=True)
    decoded, raw = grpc_codec.decode(request, 100_000)
    answer = grpc_codec.encode(decoded, raw, np.zeros((rows, 2), np.float32), "crop_yield", "v7")
    size = request.ByteSize()
    call = GrpcCall(request, size, (), 0.0, answer, grpc.StatusCode.OK, None)
    assert call.request_size == size
    if size < SMALL_BYTES:
        assert call.response_size == answer.ByteSize()
    else:
        assert answer.ByteSize() <= call.response_size <= 2.5 * answer.ByteSize()


# -- settings ------------------------------------------------------------------------------------


def test_settings_read_the_sinks_and_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "crop-yield")
    settings = Settings(payload_log_url=" http://a:8080/x , https://b/ ", port=3001)
    assert settings.payload_log_urls == ("http://a:8080/x", "https://b/")
    log = PayloadLog.from_settings(settings)
    assert log is not None
    assert [s.url for s in log.sinks] == ["http://a:8080/x", "https://b/"]
    assert log.identity.namespace == "crop-yield"
    assert re.fullmatch(r"http://[^/]+:3001/", log.identity.source)
    assert PayloadLog.from_settings(Settings()) is None


@pytest.mark.parametrize("url", ["ftp://a/", "a:8080", "http:///x", "http://a/,nope"])
def test_sinks_must_be_http_urls(url: str) -> None:
    with pytest.raises(ValidationError, match="not an http"):
        Settings(payload_log_url=url)


def test_a_password_in_a_sink_url_stays_out_of_the_logs() -> None:
    log = PayloadLog(["https://user:secret@sink.example/events"], IDENTITY)
    assert log.sinks[0].shown == "https://sink.example/events"
