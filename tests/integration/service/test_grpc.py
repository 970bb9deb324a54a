"""The Open Inference Protocol over gRPC against a served process: the RPCs, the same answers
and refusals as the REST V2 routes, health checking, reflection and the bearer token.

The protocol's own stubs (service/grpc/inference_pb2*) are used here. tritonclient.grpc
registers the same protobuf names from its own file, and one process cannot hold both, so
tritonclient.grpc runs in a subprocess (test_tritonclient_grpc_calls_the_server).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devtools import grpc_requests
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from tests.grpc_wire import RawCall
from tests.helpers import SHUTDOWN_AFTER_DEADLINE_S
from tests.integration.conftest import Server, free_port, serving

FEATURES = ("temperature", "rainfall", "humidity")
ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0], [87.0, 134.0, 58.0]], dtype=np.float32)
TOKEN = "grpc-test-token"


class Served:
    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.address = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = rpc.GRPCInferenceServiceStub(self.channel)


@pytest.fixture(scope="module")
def served(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = free_port()
    with serving(trained_home, tmp_path_factory.mktemp("grpc"), grpc_port=str(port)) as server:
        target = Served(server, port)
        yield target
        target.channel.close()


def infer_request(rows: np.ndarray = ROWS, raw: bool = False, **extra: object) -> pb.ModelInferRequest:
    return grpc_requests.infer_request(rows, raw, **extra)


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    if response.raw_output_contents:
        return {
            t.name: np.frombuffer(raw, dtype=np.bool_ if t.datatype == "BOOL" else "<f4")
            for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
    return {
        t.name: np.array(t.contents.bool_contents, np.bool_)
        if t.datatype == "BOOL"
        else np.array(t.contents.fp32_contents, np.float32)
        for t in response.outputs
    }


def rest_v2(served: Served, rows: np.ndarray, outputs: list[str] | None = None, **parameters: object) -> dict:  # type: ignore[type-arg]
    body: dict[str, object] = {
        "inputs": [
            {"name": n, "shape": [len(rows)], "datatype": "FP32", "data": rows[:, j].tolist()}
            for j, n in enumerate(FEATURES)
        ],
        "parameters": parameters,
    }
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    answer = httpx.post(f"{served.server.url}/v2/models/crop_yield/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return {t["name"]: np.array(t["data"]) for t in answer.json()["outputs"]}


def test_health_metadata_and_readiness(served: Served) -> None:
    stub = served.stub
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="crop_yield")).ready
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "crop-yield-service"
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="crop_yield"))
    rest = httpx.get(f"{served.server.url}/v2/models/crop_yield").json()
    assert [t.name for t in model.inputs] == [t["name"] for t in rest["inputs"]] == list(FEATURES)
    assert [(t.name, t.datatype) for t in model.outputs] == [
        (t["name"], t["datatype"]) for t in rest["outputs"]
    ]
    assert list(model.versions) == rest["versions"]
    version = model.versions[0]
    assert stub.ModelReady(pb.ModelReadyRequest(name="crop_yield", version=version)).ready
    for request in (
        pb.ModelReadyRequest(name="other"),
        pb.ModelReadyRequest(name="crop_yield", version="v0"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelReady(request)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    check = health_pb2_grpc.HealthStub(served.channel).Check
    for service in ("", "inference.GRPCInferenceService"):
        assert (
            check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_health_watch_streams_the_status(served: Served) -> None:
    stream = health_pb2_grpc.HealthStub(served.channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()


def test_reflection_lists_the_services(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
def test_infer_answers_as_the_rest_route(served: Served, raw: bool) -> None:
    response = served.stub.ModelInfer(infer_request(raw=raw, id="call-1"))
    assert response.model_name == "crop_yield"
    assert response.id == "call-1"
    assert bool(response.raw_output_contents) is raw
    got = outputs_of(response)
    expected = rest_v2(served, ROWS)
    assert set(got) == {"apples", "oranges"}
    for name in got:
        np.testing.assert_array_equal(got[name].astype(np.float32), expected[name].astype(np.float32))


CALLERS = 200


def test_concurrent_callers_each_get_their_own_rows(served: Served) -> None:
    """200 calls in flight at once over 8 connections, one to three rows each, every row
    different, typed and raw contents mixed: every caller gets back its own rows, in order."""
    grid = np.random.default_rng(7).uniform([50, 20, 20], [110, 150, 90], size=(CALLERS * 3, 3))
    rows = grid.astype(np.float32)
    sizes = [1 + i % 3 for i in range(CALLERS)]
    starts = np.cumsum([0, *sizes])
    expected = rest_v2(served, rows[: starts[-1]])

    async def call_all() -> list[dict[str, np.ndarray]]:
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(served.address, options=options) for _ in range(8)]
        try:
            stubs = [rpc.GRPCInferenceServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
            calls = [
                stubs[i % 8].ModelInfer(infer_request(rows[starts[i] : starts[i + 1]], raw=i % 2 == 1))
                for i in range(CALLERS)
            ]
            return [outputs_of(answer) for answer in await asyncio.gather(*calls)]
        finally:
            for channel in channels:
                await channel.close()

    answers = asyncio.run(call_all())
    for i, answer in enumerate(answers):
        mine = slice(starts[i], starts[i + 1])
        for name in ("apples", "oranges"):
            np.testing.assert_allclose(answer[name], expected[name][mine], rtol=1e-6, err_msg=f"caller {i}")


def test_one_n_by_3_tensor_as_kserve_clients_send(served: Served) -> None:
    request = pb.ModelInferRequest(model_name="crop_yield")
    request.inputs.add(name="input-0", datatype="FP32", shape=[len(ROWS), 3]).contents.fp32_contents.extend(
        ROWS.ravel().tolist()
    )
    got = outputs_of(served.stub.ModelInfer(request))
    np.testing.assert_array_equal(got["apples"], rest_v2(served, ROWS)["apples"].astype(np.float32))


def test_bulk_raw_contents(served: Served) -> None:
    rows = (
        np.random.default_rng(0).uniform([50, 20, 20], [110, 150, 90], size=(100_000, 3)).astype(np.float32)
    )
    response = served.stub.ModelInfer(infer_request(rows, raw=True))
    got = outputs_of(response)
    assert got["apples"].shape == (100_000,)
    expected = rest_v2(served, rows[:5])
    np.testing.assert_array_equal(got["apples"][:5], expected["apples"].astype(np.float32))


def test_intervals_and_flags_as_the_rest_route(served: Served) -> None:
    names = ["apples", "apples_lower", "apples_upper", "extrapolated"]
    rows = np.vstack([ROWS, [[130.0, 5.0, 99.0]]]).astype(np.float32)
    request = infer_request(rows)
    request.parameters["interval"].double_param = 0.9
    for name in names:
        request.outputs.add(name=name)
    got = outputs_of(served.stub.ModelInfer(request))
    expected = rest_v2(served, rows, names, interval=0.9)
    assert list(got) == names
    for name in names:
        np.testing.assert_array_equal(got[name], expected[name].astype(got[name].dtype))
    assert got["extrapolated"].tolist() == [False, False, False, True]


def _without(index: int, field: str) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        request.inputs[index].ClearField(field)  # type: ignore[arg-type]

    return change


def _set(index: int, **values: object) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        tensor = request.inputs[index]
        for key, value in values.items():
            if key == "shape":
                tensor.ClearField("shape")
                tensor.shape.extend(value)  # type: ignore[arg-type]
            else:
                setattr(tensor, key, value)

    return change


def _values(
    index: int, values: list[float], field: str = "fp32_contents"
) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        tensor = request.inputs[index]
        tensor.ClearField("contents")
        getattr(tensor.contents, field).extend(values)

    return change


def _output(name: str, twice: bool = False) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        for _ in range(2 if twice else 1):
            request.outputs.add(name=name)

    return change


def _parameter(**values: float) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        request.outputs.add(name="apples_lower")
        for key, value in values.items():
            request.parameters[key].double_param = value

    return change


def _drop_input(request: pb.ModelInferRequest) -> None:
    del request.inputs[2]


def _duplicate_input(request: pb.ModelInferRequest) -> None:
    request.inputs.add().CopyFrom(request.inputs[0])


def _raw_and_contents(request: pb.ModelInferRequest) -> None:
    for _ in range(3):  # the contents stay
        request.raw_input_contents.append(np.zeros(3, "<f4").tobytes())


def _raw_count(request: pb.ModelInferRequest) -> None:
    for tensor in request.inputs:
        tensor.ClearField("contents")
    request.raw_input_contents.append(np.zeros(3, "<f4").tobytes())


def _raw_size(request: pb.ModelInferRequest) -> None:
    for tensor in request.inputs:
        tensor.ClearField("contents")
        request.raw_input_contents.append(np.zeros(2, "<f4").tobytes())


def _raw_nan(request: pb.ModelInferRequest) -> None:
    for j, tensor in enumerate(request.inputs):
        tensor.ClearField("contents")
        column = np.ascontiguousarray(ROWS[:, j], "<f4")
        if j == 1:
            column[2] = np.nan
        request.raw_input_contents.append(column.tobytes())


def _too_many_rows(request: pb.ModelInferRequest) -> None:
    for tensor in request.inputs:
        tensor.ClearField("shape")
        tensor.shape.append(2_000_000)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_REQUESTS: list[tuple[str, Callable[[pb.ModelInferRequest], None], grpc.StatusCode, str]] = [
    (
        "unknown model",
        lambda r: setattr(r, "model_name", "other"),
        grpc.StatusCode.NOT_FOUND,
        "not served here",
    ),
    (
        "unknown version",
        lambda r: setattr(r, "model_version", "v0"),
        grpc.StatusCode.NOT_FOUND,
        "version 'v0'",
    ),
    ("no inputs", lambda r: r.ClearField("inputs"), INVALID, "missing input(s)"),
    ("a missing input", _drop_input, INVALID, "missing input(s) 'humidity'"),
    ("an unknown input", _set(0, name="wind"), INVALID, "unknown input 'wind'"),
    ("an input twice", _duplicate_input, INVALID, "appears twice"),
    ("no datatype", _set(0, datatype=""), INVALID, "datatype"),
    ("FP16", _set(0, datatype="FP16"), INVALID, "datatype 'FP16' is not supported"),
    ("BYTES", _set(0, datatype="BYTES"), INVALID, "datatype 'BYTES' is not supported"),
    ("no shape", _without(0, "shape"), INVALID, "shape"),
    ("a negative shape", _set(0, shape=[-3]), INVALID, "shape"),
    ("shape disagrees with data", _set(0, shape=[5]), INVALID, "shape says 5 rows but data holds 3"),
    ("2-D shape of other width", _set(0, shape=[3, 2]), INVALID, "shape"),
    ("inputs differ in rows", _values(2, [43.0, 64.0]), INVALID, "shape says 3 rows but data holds 2"),
    (
        "no contents",
        _without(1, "contents"),
        INVALID,
        "input 'rainfall' has no elements; send them in contents.fp32",
    ),
    (
        "contents in another type's field",
        _values(0, [73.0, 91.0, 87.0], "fp64_contents"),
        INVALID,
        "fp32_contents",
    ),
    ("NaN", _values(1, [67.0, float("nan"), 1.0]), INVALID, "element 1 is nan"),
    ("infinity", _values(0, [float("inf"), 1.0, 1.0]), INVALID, "not a finite number"),
    ("below the minimum", _values(2, [43.0, -5.0, 58.0]), INVALID, "below the minimum 0"),
    ("above the maximum", _values(2, [43.0, 150.0, 58.0]), INVALID, "above the maximum 100"),
    ("too many rows", _too_many_rows, INVALID, "at most"),
    ("an unknown output", _output("pears"), INVALID, "unknown output 'pears'"),
    ("an output twice", _output("apples", twice=True), INVALID, "requested twice"),
    ("interval above 1", _parameter(interval=1.5), INVALID, "interval"),
    ("interval 0", _parameter(interval=0.0), INVALID, "interval"),
    ("raw and contents", _raw_and_contents, INVALID, "contents as well as raw_input_contents"),
    ("raw count", _raw_count, INVALID, "raw_input_contents has 1 entries for 3 inputs"),
    ("raw sizes", _raw_size, INVALID, "binary_data_size is 8 bytes but 3 FP32 elements take 12"),
    ("raw NaN", _raw_nan, INVALID, "element 2 is nan"),
]


@pytest.mark.parametrize(
    ("case", "change", "code", "fragment"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_are_refused_with_the_protocol_message(
    served: Served,
    case: str,
    change: Callable[[pb.ModelInferRequest], None],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    request = infer_request()
    change(request)
    with pytest.raises(grpc.RpcError) as refused:
        served.stub.ModelInfer(request)
    assert refused.value.code() == code, refused.value.details()
    assert fragment in (refused.value.details() or ""), refused.value.details()
    assert served.stub.ServerReady(pb.ServerReadyRequest()).ready


MALFORMED = [
    ("garbage", b"\xff\xff\xff\xff", "the bytes end inside a field's tag"),
    ("truncated", b"\x1a\x40abc", "id says 64 bytes but only 3 remain"),
    ("invalid UTF-8", b"\x0a\x05cr\xffop", "model_name is not valid UTF-8"),
]


@pytest.mark.parametrize(("case", "message", "fragment"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_messages_that_are_not_protobuf_are_invalid_argument_on_every_rpc_and_counted(
    served: Served, case: str, message: bytes, fragment: str
) -> None:
    """grpcio's own deserializer answered these UNKNOWN (a server fault) before any layer
    counted them. (A string that is not UTF-8 is wrong only where the field is a string:
    other messages keep it as an unknown field.)"""
    before = _grpc_count(served, "ModelInfer", "INVALID_ARGUMENT")
    methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    for method in methods if case != "invalid UTF-8" else [m for m in methods if m.name == "ModelInfer"]:
        call = served.channel.unary_unary(f"/inference.GRPCInferenceService/{method.name}")
        with pytest.raises(grpc.RpcError) as refused:
            call(message, timeout=10)
        assert refused.value.code() == INVALID, (method.name, refused.value.details())
        details = refused.value.details() or ""
        assert f"not a valid inference.{method.input_type.name} message" in details
        if method.name == "ModelInfer":  # the same bytes, read as each method's message
            assert fragment in details, details
    health = served.channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.RpcError) as refused:
        health(message, timeout=10)
    assert refused.value.code() == INVALID  # its service is a string too
    assert _grpc_count(served, "ModelInfer", "INVALID_ARGUMENT") == before + 1
    assert served.stub.ServerReady(pb.ServerReadyRequest()).ready


def test_a_message_the_transport_refuses_is_counted_as_started_but_not_answered(served: Served) -> None:
    """Over the size limit, grpcio's transport answers RESOURCE_EXHAUSTED before any of the
    service's code runs: the call is begun (counted) and never answered by a layer."""

    def unanswered() -> float:
        text = httpx.get(f"{served.server.url}/metrics").text
        started = sum(
            float(row.split()[-1])
            for row in text.splitlines()
            if row.startswith('crop_yield_grpc_calls_started_total{method="ModelInfer"}')
        )
        answered = sum(
            float(row.split()[-1])
            for row in text.splitlines()
            if row.startswith("crop_yield_grpc_requests_total{") and 'method="ModelInfer"' in row
        )
        return started - answered

    time.sleep(1.2)  # every count of earlier calls flushed (once a second)
    before = unanswered()
    call = served.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as refused:
        call(b"\x0a" + b"\x00" * (41 << 20), timeout=30)  # over the 40 MiB default
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    served.stub.ModelInfer(infer_request())  # answered: started and answered alike
    time.sleep(1.2)
    assert unanswered() == before + 1


def _grpc_count(served: Served, method: str, code: str) -> float:
    text = httpx.get(f"{served.server.url}/metrics").text
    line = f'crop_yield_grpc_requests_total{{code="{code}",method="{method}"}} '
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


def test_the_bearer_token_is_required_on_inference_not_on_the_probes(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    port = free_port()
    with serving(trained_home, tmp_path, grpc_port=str(port), auth_token=TOKEN) as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.GRPCInferenceServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.ModelInfer(infer_request(), metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = stub.ModelInfer(infer_request(), metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert len(outputs_of(answer)["apples"]) == len(ROWS)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # the protocol's probes too, as their HTTP twins (/v2/health/*, a model's /ready, /v2)
            assert stub.ServerLive(pb.ServerLiveRequest()).live
            assert stub.ServerReady(pb.ServerReadyRequest()).ready
            assert stub.ModelReady(pb.ModelReadyRequest(name="crop_yield")).ready
            assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "crop-yield-service"
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelMetadata(pb.ModelMetadataRequest(name="crop_yield"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert httpx.get(f"{server.url}/readyz").status_code == 200


TRITON_CLIENT = textwrap.dedent(
    """
    import json
    import sys
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(sys.argv[1])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("crop_yield")
    metadata = client.get_model_metadata("crop_yield", as_json=True)
    assert [i["name"] for i in metadata["inputs"]] == ["temperature", "rainfall", "humidity"]
    assert "model_configuration" in client.get_server_metadata(as_json=True)["extensions"]
    config = client.get_model_config("crop_yield").config  # Triton's own message, read back
    assert config.name == "crop_yield" and config.max_batch_size == 0
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (name, 11, [-1]) for name in ("temperature", "rainfall", "humidity")  # TYPE_FP32
    ]
    assert config.parameters["batching"].string_value.startswith("adaptive")
    assert config.parameters["model_tag"].string_value.startswith("crop_yield:")
    before = client.get_inference_statistics("crop_yield").model_stats[0].inference_stats.success.count
    inputs = []
    for name, value in (("temperature", 73.0), ("rainfall", 67.0), ("humidity", 43.0)):
        tensor = grpcclient.InferInput(name, [2], "FP32")
        tensor.set_data_from_numpy(np.array([value, value], dtype=np.float32))
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("apples", "oranges", "extrapolated")]
    result = client.infer("crop_yield", inputs, outputs=outputs)
    (stats,) = client.get_inference_statistics("crop_yield").model_stats
    assert stats.inference_stats.success.count == before + 1, (before, stats)
    assert stats.inference_stats.compute_infer.ns > 0 and stats.execution_count > 0
    print(json.dumps({n: result.as_numpy(n).tolist() for n in ("apples", "extrapolated")}))
    """
)


def test_tritonclient_grpc_calls_the_server(served: Served) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CLIENT, served.address], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    expected = rest_v2(served, np.array([[73.0, 67.0, 43.0]] * 2, dtype=np.float32))
    np.testing.assert_array_equal(
        np.array(answer["apples"], np.float32), expected["apples"].astype(np.float32)
    )
    assert answer["extrapolated"] == [False, False]


def test_calls_are_counted_by_method_and_code_and_logged_with_their_request_id(served: Served) -> None:
    def count(method: str, code: str) -> float:
        return _grpc_count(served, method, code)

    ok, invalid = count("ModelInfer", "OK"), count("ModelInfer", "INVALID_ARGUMENT")
    served.stub.ModelInfer(infer_request())
    bad = infer_request()
    bad.inputs[0].name = "wind"
    with pytest.raises(grpc.RpcError):
        served.stub.ModelInfer(bad, metadata=(("x-request-id", "grpc-call-42"),))
    assert count("ModelInfer", "OK") == ok + 1
    assert count("ModelInfer", "INVALID_ARGUMENT") == invalid + 1
    assert "crop_yield_grpc_request_duration_seconds_bucket" in httpx.get(f"{served.server.url}/metrics").text
    log = served.server.log.read_text()
    (line,) = [row for row in log.splitlines() if "grpc-call-42" in row]
    assert "answered INVALID_ARGUMENT: unknown input 'wind'" in line


def test_workers_share_the_port_and_connections_reach_more_than_one(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    port = free_port()
    with serving(trained_home, tmp_path, grpc_port=str(port), workers="2") as server:
        deadline = time.monotonic() + 60  # /readyz answered: one worker is up, the other may not be
        while len(_on_port(server, port, psutil.CONN_LISTEN)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        # a connection of its own per channel (they share grpc's global subchannel pool otherwise)
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(16)]
        try:
            for channel in channels:
                answer = rpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request())
                assert len(outputs_of(answer)["apples"]) == len(ROWS)
            holding = _on_port(server, port, psutil.CONN_ESTABLISHED)
        finally:
            for channel in channels:
                channel.close()
    assert len(holding) == 2, f"the 16 connections' calls were answered by {len(holding)} worker(s)"


def _on_port(server: Server, port: int, status: str) -> set[int]:
    """The server's processes with a socket in ``status`` on ``port``."""
    return {
        process.pid
        for process in psutil.Process(server.process.pid).children(recursive=True)
        for connection in process.net_connections(kind="tcp")
        if connection.status == status and connection.laddr.port == port
    }


def _upload(server: Server, rows: int) -> tuple[socket.socket, bytes]:
    """A /predict_columns request of ``rows`` rows whose head and first half are sent; the
    socket and the rest of the body."""
    values = ROWS[np.arange(rows) % len(ROWS)]
    body = json.dumps({name: values[:, j].tolist() for j, name in enumerate(FEATURES)}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    upload = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /predict_columns HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    upload.sendall(head.encode() + body[: len(body) // 2])
    return upload, body[len(body) // 2 :]


def _until_in_progress(server: Server) -> None:
    """Until the server has taken an HTTP request in (its in-progress gauge: /metrics itself is
    not counted): a connection still in the accept backlog at SIGTERM would be reset."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith("bentoml_service_request_in_progress{") and float(line.split()[-1]) >= 1:
                return
        time.sleep(0.05)
    raise AssertionError("the upload never reached the service")


def _answer(upload: socket.socket) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = http.client.HTTPResponse(upload)
    response.begin()
    return response.status, json.loads(response.read())


def test_sigterm_turns_health_at_once_and_calls_in_flight_on_both_transports_finish(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    port = free_port()
    with serving(trained_home, tmp_path, grpc_port=str(port), graceful_shutdown_timeout="15") as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            upload, rest = _upload(server, 1000)
            call = RawCall(("127.0.0.1", port), infer_request().SerializeToString())
            call.send(len(call.payload) // 2)
            _until_in_progress(server)
            time.sleep(
                0.2
            )  # the gRPC call's headers too (proved below: it finishes after new calls are refused)
            signalled = time.monotonic()
            os.kill(server.process.pid, signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            turned = time.monotonic() - signalled
            with grpc.insecure_channel(f"127.0.0.1:{port}") as fresh, pytest.raises(grpc.RpcError) as refused:
                rpc.GRPCInferenceServiceStub(fresh).ModelInfer(infer_request(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "a new call after the signal"
            upload.sendall(rest)
            status, answered = _answer(upload)
            assert status == 200, answered
            assert len(answered["apples"]) == 1000
            code, details, message = call.answer()
            assert code == grpc.StatusCode.OK.value[0], details
            assert len(outputs_of(pb.ModelInferResponse.FromString(message))["apples"]) == len(ROWS)
            upload.close()
            call.close()
            watch.cancel()
        assert server.process.wait(30) == 0
    assert turned < 2, f"health turned NOT_SERVING {turned:.1f} s after SIGTERM"


def test_calls_stuck_on_both_transports_share_one_shutdown_deadline(
    trained_home: tuple[Path, str], tmp_path: Path
) -> None:
    """The deadline the manifests' termination grace period is sized by (tests/deploy)."""
    port = free_port()
    grace = 5
    settings = {"graceful_shutdown_timeout": str(grace), "body_timeout": "60", "body_rate_grace": "60"}
    with (
        serving(trained_home, tmp_path, grpc_port=str(port), **settings) as server,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        next(watch)  # a stream: in flight until the server ends it
        upload, _ = _upload(server, 1000)  # never finished
        call = RawCall(("127.0.0.1", port), infer_request().SerializeToString())
        call.send(len(call.payload) // 2)  # never finished
        _until_in_progress(server)
        time.sleep(0.2)
        signalled = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(30) == 0
        took = time.monotonic() - signalled
        upload.close()
        call.close()
    assert grace <= took + 0.5, f"stopped after {took:.1f} s: calls in flight did not get the grace period"
    assert took <= grace + SHUTDOWN_AFTER_DEADLINE_S, (
        f"stopped {took:.1f} s after SIGTERM with CROP_YIELD_GRACEFUL_SHUTDOWN_TIMEOUT={grace}"
    )
