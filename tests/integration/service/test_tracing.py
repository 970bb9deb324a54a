"""Tracing on a served process: an OTLP/HTTP receiver in the test gets the spans of sampled
requests (a caller's sampled flag; the service's own ratio is 0 here) over /predict, V2 REST
and gRPC, with their decode / predict / encode children; unsampled requests make no span
but get their trace context back (``traceresponse``); the log lines carry the trace id."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from devtools.grpc_requests import infer_request
from service.grpc import inference_pb2_grpc as rpc
from tests.integration.conftest import Server, serving
from tests.v2_cases import json_request

pytestmark = pytest.mark.integration

ROW = {"temperature": 80.0, "rainfall": 90.0, "humidity": 50.0}


class Receiver:
    """An OTLP/HTTP trace endpoint: every exported span, by trace id (hex)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource in request.resource_spans:
                        service = {a.key: a.value.string_value for a in resource.resource.attributes}
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append(
                                    {
                                        "service": service.get("service.name"),
                                        "name": span.name,
                                        "trace": span.trace_id.hex(),
                                        "id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "attributes": {a.key: a.value for a in span.attributes},
                                    }
                                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, trace: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The spans of ``trace`` once ``count`` arrived (or what came within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [s for s in self.spans if s["trace"] == trace]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture(scope="module")
def server(
    trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[Server]:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not every 5 s
        "OTEL_SERVICE_NAME": "crop-yield-test",
    }
    saved = {name: os.environ.get(name) for name in otel}
    os.environ.update(otel)
    try:
        with serving(
            trained_home, tmp_path_factory.mktemp("traced"), trace_ratio="0", log_format="json"
        ) as running:
            yield running
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def traceparent(rng: np.random.Generator, sampled: bool) -> tuple[str, str, str]:
    trace, parent = rng.bytes(16).hex(), rng.bytes(8).hex()
    return f"00-{trace}-{parent}-{'01' if sampled else '00'}", trace, parent


def check_tree(spans: list[dict[str, Any]], server_name: str, parent: str) -> dict[str, dict[str, Any]]:
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {server_name, "decode", "predict", "encode"}, spans
    root = by_name[server_name]
    assert root["parent"] == parent
    assert root["service"] == "crop-yield-test"
    for child in ("decode", "predict", "encode"):
        assert by_name[child]["parent"] == root["id"]
    return by_name


def test_a_sampled_predict_call_is_traced_with_its_children(server: Server, receiver: Receiver) -> None:
    header, trace, parent = traceparent(np.random.default_rng(1), sampled=True)
    response = httpx.post(
        f"{server.url}/predict", json={"inputs": [ROW, ROW]}, headers={"traceparent": header}
    )
    assert response.status_code == 200
    spans = check_tree(receiver.of(trace, 4), "POST /predict", parent)
    root = spans["POST /predict"]
    assert response.headers["traceresponse"] == f"00-{trace}-{root['id']}-01"
    assert root["attributes"]["http.response.status_code"].int_value == 200
    assert spans["predict"]["attributes"]["crop_yield.batch_rows"].int_value == 2


def test_v2_rest_and_grpc_calls_are_traced(server: Server, receiver: Receiver) -> None:
    rng = np.random.default_rng(2)
    header, trace, parent = traceparent(rng, sampled=True)
    rows = np.array([list(ROW.values())])
    v2 = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer", json=json_request(rows), headers={"traceparent": header}
    )
    assert v2.status_code == 200
    check_tree(receiver.of(trace, 4), "POST /v2/models/crop_yield/infer", parent)

    header, trace, parent = traceparent(rng, sampled=True)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        infer = rpc.GRPCInferenceServiceStub(channel).ModelInfer
        _, call = infer.with_call(infer_request(rows.astype(np.float32)), metadata=(("traceparent", header),))
    spans = check_tree(receiver.of(trace, 4), "inference.GRPCInferenceService/ModelInfer", parent)
    trailer = dict(call.trailing_metadata() or ())
    assert (
        trailer["traceresponse"]
        == f"00-{trace}-{spans['inference.GRPCInferenceService/ModelInfer']['id']}-01"
    )


def test_an_unsampled_call_makes_no_span_but_gets_its_context_back(
    server: Server, receiver: Receiver
) -> None:
    rng = np.random.default_rng(3)
    header, trace, parent = traceparent(rng, sampled=False)
    response = httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, headers={"traceparent": header})
    assert response.status_code == 200
    assert response.headers["traceresponse"] == f"00-{trace}-{parent}-00"
    untraced = httpx.post(f"{server.url}/predict", json={"inputs": [ROW]})  # ratio 0: no trace at all
    assert "traceresponse" not in untraced.headers
    sampled, later, _ = traceparent(rng, sampled=True)  # a later sampled call's spans arrive...
    httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, headers={"traceparent": sampled})
    assert len(receiver.of(later, 4)) == 4
    assert receiver.of(trace, 1, timeout=0) == []  # ...and the unsampled one's never did


def test_a_refused_call_is_traced_and_its_log_line_carries_the_trace_id(
    server: Server, receiver: Receiver
) -> None:
    header, trace, parent = traceparent(np.random.default_rng(4), sampled=True)
    response = httpx.post(
        f"{server.url}/predict",
        json={"inputs": [{**ROW, "rainfall": -1.0}]},
        headers={"traceparent": header, "x-request-id": "traced-refusal"},
    )
    assert response.status_code == 400
    (root,) = receiver.of(trace, 1)  # refused while reading the request: no model call
    assert root["parent"] == parent
    assert root["attributes"]["http.response.status_code"].int_value == 400
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("request_id") == "traced-refusal"]
        if mine:
            break
        time.sleep(0.2)
    assert mine, "no log line about the refused request"
    assert {line["trace_id"] for line in mine} == {trace}
