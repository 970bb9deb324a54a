"""Payload logging against served processes and real sinks (devtools.payload_sink, which
reads every event with the CloudEvents SDK): the events of every prediction route, errors
included, at two sinks; sampling with KServe's ids and the flush at shutdown; request-only
mode beside a slow and a dead sink, which neither slow the predictions nor grow the worker."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from devtools import served
from devtools.grpc_requests import infer_request
from devtools.payload_sink import Received, Sink
from service.grpc import inference_pb2_grpc as rpc
from service.observability.payloads import REQUEST_TYPE, RESPONSE_TYPE, sampled
from tests.integration.conftest import Server, free_port, serving
from tests.integration.service.test_api import _metric
from tests.v2_cases import binary_request, json_request

pytestmark = pytest.mark.integration

ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]], dtype=np.float32)
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SOURCE = "http://crop-yield.test:3000/"
ONE_ROW = {"inputs": [{"temperature": 73, "rainfall": 67, "humidity": 43}]}


class Logged:
    def __init__(self, server: Server, sinks: list[Sink]) -> None:
        self.server = server
        self.sinks = sinks
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        self.stub = rpc.GRPCInferenceServiceStub(self.channel)

    def pair(self, request_id: str, sink: int = 0) -> tuple[Received, Received]:
        """The request and response events of the call with this request id."""
        events = self.sinks[sink].wait_for(2, lambda r: r["requestid"] == request_id)
        by_type = {r["type"]: r for r in events}
        assert len(events) == 2, events
        assert set(by_type) == {REQUEST_TYPE, RESPONSE_TYPE}, events
        return by_type[REQUEST_TYPE], by_type[RESPONSE_TYPE]


@pytest.fixture(scope="module")
def logged(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    sinks = [Sink(), Sink()]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POD_NAMESPACE", "crop-yield-test")
        with serving(
            trained_home,
            tmp_path_factory.mktemp("payloads"),
            payload_log_url=",".join(s.url for s in sinks),
            payload_log_source=SOURCE,
        ) as server:
            target = Logged(server, sinks)
            yield target
            target.channel.close()
    for sink in sinks:
        sink.close()


def version_of(server: Server) -> str:
    return server.tag.partition(":")[2]


def check_common(event: Received, server: Server, request_id: str, protocol: str, subject: str) -> None:
    assert event["specversion"] == "1.0"
    assert event["source"] == SOURCE
    assert event["subject"] == subject
    assert event["inferenceservicename"] == "crop-yield"
    assert event["namespace"] == "crop-yield-test"
    assert event["component"] == "predictor"
    assert event["endpoint"] == "default"
    assert event["requestid"] == request_id
    assert event["protocol"] == protocol
    assert event["modelversion"] == version_of(server)
    assert event["time"] is not None


def test_json_api_calls_are_logged_as_request_and_response(logged: Logged) -> None:
    server = logged.server
    body = b'{"inputs": [{"temperature": 73, "rainfall": 67, "humidity": 43}]}'
    headers = {"content-type": "application/json", "x-request-id": "p-json-1", "traceparent": TRACE}
    answer = httpx.post(f"{server.url}/predict", content=body, headers=headers)
    assert answer.status_code == 200
    request, response = logged.pair("p-json-1")
    for event in (request, response):
        check_common(event, server, "p-json-1", "json-api", "/predict")
        assert event["statuscode"] == "200"
        assert event["traceparent"] == TRACE
        assert event["datacontenttype"] == "application/json"
    assert request.body == body  # as received
    assert response.body == answer.content  # as sent
    assert request["id"] != response["id"]
    assert request["time"] <= response["time"]

    columns = {"temperature": [73, 75], "rainfall": [67, 63], "humidity": [43, 44]}
    answer = httpx.post(f"{server.url}/predict_columns", json=columns, headers={"x-request-id": "p-cols-1"})
    request, response = logged.pair("p-cols-1")
    assert (request.data, response.data) == (columns, answer.json())
    assert request["subject"] == "/predict_columns"


def test_an_error_answer_is_logged_with_its_status(logged: Logged) -> None:
    bad = {"inputs": [{"temperature": 73, "rainfall": 67, "humidity": 101}]}
    answer = httpx.post(f"{logged.server.url}/predict", json=bad, headers={"x-request-id": "p-bad-1"})
    assert answer.status_code == 400
    request, response = logged.pair("p-bad-1")
    assert request["statuscode"] == response["statuscode"] == "400"
    assert request.data == bad
    assert response.data == answer.json()


@pytest.mark.parametrize("versioned", [False, True])
def test_v2_json_calls_are_logged(logged: Logged, versioned: bool) -> None:
    server = logged.server
    path = "/v2/models/crop_yield" + (f"/versions/{version_of(server)}" if versioned else "") + "/infer"
    request_id = f"p-v2-json-{versioned}"
    document = json_request(ROWS, id="c1")
    answer = httpx.post(f"{server.url}{path}", json=document, headers={"x-request-id": request_id})
    assert answer.status_code == 200
    request, response = logged.pair(request_id)
    check_common(request, server, request_id, "v2-rest", path)
    assert (request.data, response.data) == (document, answer.json())


def test_v2_binary_calls_are_logged_raw(logged: Logged) -> None:
    server = logged.server
    body, header_length = binary_request(ROWS, parameters={"binary_data_output": True})
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(header_length),
        "x-request-id": "p-v2-bin-1",
    }
    answer = httpx.post(f"{server.url}/v2/models/crop_yield/infer", content=body, headers=headers)
    assert answer.status_code == 200
    request, response = logged.pair("p-v2-bin-1")
    assert (request.body, request["inferenceheadersize"]) == (body, str(header_length))
    assert request["datacontenttype"] == "application/octet-stream"
    assert response.body == answer.content
    assert response["inferenceheadersize"] == answer.headers["inference-header-content-length"]


@pytest.mark.parametrize("raw", [False, True])
def test_grpc_calls_are_logged_as_v2_json(logged: Logged, raw: bool) -> None:
    server = logged.server
    request_id = f"p-grpc-{raw}"
    metadata = (("x-request-id", request_id), ("traceparent", TRACE))
    logged.stub.ModelInfer(infer_request(ROWS, raw, id="g1"), metadata=metadata)
    rest = httpx.post(f"{server.url}/v2/models/crop_yield/infer", json=json_request(ROWS, id="g1")).json()
    request, response = logged.pair(request_id)
    check_common(request, server, request_id, "v2-grpc", "/v2/models/crop_yield/infer")
    assert (request["statuscode"], request["grpccode"], request["traceparent"]) == ("200", "OK", TRACE)
    assert request.data == json_request(ROWS, id="g1")
    assert response.data == rest  # the REST route's answer to the same call


def test_a_refused_grpc_call_is_logged(logged: Logged) -> None:
    request = infer_request(np.array([[73.0, -1.0, 43.0]], dtype=np.float32))
    with pytest.raises(grpc.RpcError) as refused:
        logged.stub.ModelInfer(request, metadata=(("x-request-id", "p-grpc-bad"),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, response = logged.pair("p-grpc-bad")
    assert (response["statuscode"], response["grpccode"]) == ("400", "INVALID_ARGUMENT")
    assert response.data == {"error": refused.value.details()}


def test_both_sinks_get_every_event_and_other_routes_are_not_logged(logged: Logged) -> None:
    server = logged.server
    for path in ("/metadata", "/v2/models/crop_yield", "/v2/health/ready"):
        httpx.get(f"{server.url}{path}", headers={"x-request-id": "p-not-logged"})
    httpx.post(f"{server.url}/predict", json=ONE_ROW, headers={"x-request-id": "p-last"})
    last = logged.pair("p-last", sink=0)
    assert {e["id"] for e in logged.pair("p-last", sink=1)} == {e["id"] for e in last}
    first, second = (sorted(r["id"] for r in s.events()) for s in logged.sinks)
    assert first == second
    assert not logged.sinks[0].events(lambda r: r["requestid"] == "p-not-logged")
    deadline = time.monotonic() + 5  # outcomes reach Prometheus a few times a second
    while True:
        metrics = httpx.get(f"{server.url}/metrics").text
        sent = _metric(metrics, 'crop_yield_payload_events_total{outcome="sent"}')
        if sent >= len(first) * 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sent >= len(first) * 2
    assert _metric(metrics, 'crop_yield_payload_events_total{outcome="dropped"}') == 0


def test_sampling_keeps_pairs_and_shutdown_flushes_the_queue(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    """Half the calls, by request id, with KServe's shared ids. The sink holds every answer
    until SIGTERM, so the events of the 200 calls are still queued when shutdown begins."""
    sink = Sink(held=True)
    ids = [f"s-{i}" for i in range(200)]
    settings = {"payload_log_url": sink.url, "payload_log_sample": "0.5", "payload_log_kserve_ids": "true"}
    try:
        with serving(trained_home, tmp_path, **settings, payload_log_timeout="10") as server:
            with httpx.Client() as client:
                for request_id in ids:
                    answer = client.post(
                        f"{server.url}/predict", json=ONE_ROW, headers={"x-request-id": request_id}
                    )
                    assert answer.status_code == 200
            threading.Timer(0.3, sink.release).start()
            started = time.monotonic()
            assert served.stop(server.process) == 0
            assert time.monotonic() - started < 10
    finally:
        sink.close()
    kept = {i for i in ids if sampled(i, 0.5)}
    assert 70 < len(kept) < 130
    events = sink.events()
    assert sorted(r["requestid"] for r in events) == sorted([*kept, *kept])  # every pair, whole
    assert all(r["id"] == r["requestid"] for r in events)
    assert re.fullmatch(r"http://[^/]+:\d+/", events[0]["source"])


def test_a_slow_and_a_dead_sink_neither_slow_predictions_nor_grow_the_worker(
    server: Server, trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    healthy, slow = Sink(), Sink(delay=3)
    dead = f"http://127.0.0.1:{free_port()}/"
    settings = {
        "payload_log_url": f"{healthy.url},{slow.url},{dead}",
        "payload_log_mode": "request",
        # room for a second of the healthy sink's events (a sink thread in this busy process
        # can stall that long); the slow sink's 3 s answers still fill it and drop
        "payload_log_queue_events": "200",
        "payload_log_timeout": "0.5",
    }

    def latencies(url: str, prefix: str, n: int) -> list[float]:
        times = []
        with httpx.Client() as client:
            for i in range(n):
                started = time.perf_counter()
                answer = client.post(
                    f"{url}/predict", json=ONE_ROW, headers={"x-request-id": f"{prefix}-{i}"}
                )
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200
        return times

    try:
        with serving(trained_home, tmp_path, **settings) as logged:
            latencies(logged.url, "warm", 50)
            baseline = statistics.median(latencies(server.url, "base", 100))
            with_sinks = latencies(logged.url, "l", 100)
            rss = served.worker_rss_mb(logged.process)
            latencies(logged.url, "more", 400)
            grown = served.worker_rss_mb(logged.process) - rss
            got = healthy.wait_for(550)  # every call's request event: 50 + 100 + 400
            time.sleep(1)  # the dead sink's retries end
            metrics = httpx.get(f"{logged.url}/metrics").text
    finally:
        for sink in (healthy, slow):
            sink.close()
    assert statistics.median(with_sinks) < 2 * baseline + 0.005, (statistics.median(with_sinks), baseline)
    assert max(with_sinks) < 0.4  # nothing waited for the 3 s sink or the 0.5 s timeout
    assert grown < 20, grown
    assert len(got) == 550
    assert {r["type"] for r in healthy.events()} == {REQUEST_TYPE}  # mode=request
    assert _metric(metrics, 'crop_yield_payload_events_total{outcome="dropped"}') > 0
    assert _metric(metrics, 'crop_yield_payload_events_total{outcome="failed"}') > 0
    assert _metric(metrics, 'crop_yield_payload_events_total{outcome="sent"}') >= 550
