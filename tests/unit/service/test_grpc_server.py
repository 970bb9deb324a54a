"""The worker's gRPC server (service.grpc.server) and the layers of every RPC
(service.grpc.layers), in one event loop with a real grpc.aio server on localhost: the probe
RPCs open with a token set, abandoned calls counted with their codes, health from the first
connection and from the first moment of shutdown, and the port bound exclusively by one
worker. Calls against a served process are in tests/integration/service/test_grpc.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.grpc.layers import OPEN
from service.grpc.server import INFERENCE_SERVICE, READABLE, GrpcServer, inference_handler
from service.grpc.servicer import InferenceServicer
from service.http.paths import is_probe, is_protected
from service.inference.admission import MemoryBudget, Slots
from service.inference.preflight import port_problem
from service.observability.context import REQUEST_ID
from service.settings import Settings
from tests.unit.service.test_grpc_admission import Held, refusal, until

TOKEN = "unit-token"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INFER = pb.ModelInferRequest(model_name="m")


class Plane:
    """What the servicer and the server read of the data plane."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.model_name = "crop_yield"
        self.model_version = "v1"
        self.versions = ["v1"]
        self.max_bulk_rows = 10


@asynccontextmanager
async def running(
    plane: Plane,
    servicer: rpc.GRPCInferenceServiceServicer | None = None,
    token: str | None = None,
    slots: Slots | None = None,
    timeout: float = 30,
    address: str = "127.0.0.1:0",
    reuse_port: bool = False,
) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    handler = inference_handler(
        servicer or InferenceServicer(plane),  # type: ignore[arg-type]
        slots or Slots(8),
        MemoryBudget(None, 1),
        token,
        timeout,
    )
    server = GrpcServer(plane, handler, address, 1 << 20, reuse_port=reuse_port)  # type: ignore[arg-type]
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, channel
    finally:
        await server.stop(0)


def calls(method: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value("crop_yield_grpc_requests_total", {"method": method, "code": code}) or 0.0
    )


def test_the_probe_rpcs_answer_without_the_token_and_the_others_do_not() -> None:
    async def scenario() -> None:
        async with running(Plane(), token=TOKEN) as (_, channel):
            stub = rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            assert (await stub.ServerLive(pb.ServerLiveRequest())).live
            assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
            assert (await stub.ModelReady(pb.ModelReadyRequest(name="crop_yield"))).ready
            assert (await stub.ServerMetadata(pb.ServerMetadataRequest())).name == "crop-yield-service"
            for call in (
                stub.ModelMetadata(pb.ModelMetadataRequest(name="crop_yield")),
                stub.ModelInfer(pb.ModelInferRequest(model_name="crop_yield")),
            ):
                assert (await refusal(call)).code() == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("authorization", f"Bearer {TOKEN}"),)
            answer = await stub.ModelMetadata(pb.ModelMetadataRequest(name="crop_yield"), metadata=metadata)
            assert list(answer.versions) == ["v1"]

    asyncio.run(scenario())


HTTP_TWIN = {
    "ServerLive": "/v2/health/live",
    "ServerReady": "/v2/health/ready",
    "ModelReady": "/v2/models/crop_yield/ready",
    "ServerMetadata": "/v2",
    "ModelMetadata": "/v2/models/crop_yield",
    "ModelInfer": "/v2/models/crop_yield/infer",
    "ModelConfig": "/v2/models/crop_yield/config",
    "ModelStatistics": "/v2/models/crop_yield/stats",
    "RepositoryIndex": "/v2/repository/index",
    "RepositoryModelLoad": "/v2/repository/models/crop_yield/load",
    "RepositoryModelUnload": "/v2/repository/models/crop_yield/unload",
}


def test_the_open_rpcs_are_the_open_http_routes() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    assert set(HTTP_TWIN) == methods
    assert {m for m, path in HTTP_TWIN.items() if not is_protected(path)} == OPEN | READABLE
    assert {m for m, path in HTTP_TWIN.items() if is_probe(path)} == OPEN  # no slot either
    assert is_protected("/v2/repository/models/crop_yield/default")  # REST only: no gRPC twin
    assert is_probe("/v2/models/crop_yield/versions/v1/ready")
    for path in ("/v2/models/ready", "/v2/models/m/versions/ready", "/v2/models/m/x/ready"):
        assert is_protected(path), path  # not a readiness route: only the exact shapes are open


def test_abandoned_calls_are_counted_as_the_client_sees_them_and_give_their_slot_back() -> None:
    async def scenario() -> None:
        slots, held = Slots(4), Held()
        cancelled, expired = calls("ModelInfer", "CANCELLED"), calls("ModelInfer", "DEADLINE_EXCEEDED")
        async with running(Plane(), servicer=held, slots=slots) as (_, channel):
            stub = rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            call = stub.ModelInfer(INFER)
            await until(lambda: held.started == 1 and slots.in_flight == 1)
            call.cancel()
            await until(lambda: slots.in_flight == 0)
            await until(lambda: calls("ModelInfer", "CANCELLED") == cancelled + 1)

            error = await refusal(stub.ModelInfer(INFER, timeout=0.3))  # the client's deadline
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await until(lambda: slots.in_flight == 0)
            await until(lambda: calls("ModelInfer", "DEADLINE_EXCEEDED") == expired + 1)
            assert calls("ModelInfer", "CANCELLED") == cancelled + 1

    asyncio.run(scenario())


def test_health_is_serving_from_the_first_connection_when_the_plane_is_ready() -> None:
    async def scenario() -> None:
        plane = Plane(ready=True)
        handler = inference_handler(InferenceServicer(plane), Slots(1), MemoryBudget(None, 1), None, 1)  # type: ignore[arg-type]
        server = GrpcServer(plane, handler, "127.0.0.1:0", 1 << 20)  # type: ignore[arg-type]
        seen: list[int] = []
        original = server.health.set

        async def recorded(status: Any) -> None:
            seen.append(status)
            await original(status)

        server.health.set = recorded  # type: ignore[method-assign]
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
                assert (await stream.read()).status == SERVING
                await asyncio.sleep(0.5)  # a readiness poll would have run by now
                stream.cancel()
        finally:
            await server.stop(0)
        # never NOT_SERVING on the way: a Watch stream opened at start would have seen it
        assert seen == [SERVING]

    asyncio.run(scenario())


def test_health_says_not_serving_until_the_plane_is_ready() -> None:
    async def scenario() -> None:
        plane = Plane(ready=False)
        async with running(plane) as (_, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", INFERENCE_SERVICE):
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == NOT_SERVING
            stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await stream.read()).status == NOT_SERVING
            plane.ready = True
            async with asyncio.timeout(5):
                assert (await stream.read()).status == SERVING
            stream.cancel()

    asyncio.run(scenario())


def test_shutdown_flips_health_at_once_refuses_new_calls_and_lets_calls_in_flight_finish() -> None:
    async def scenario() -> None:
        held = Held()
        async with running(Plane(), servicer=held) as (server, channel):
            stub = rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await stream.read()).status == SERVING
            in_flight = asyncio.ensure_future(stub.ModelInfer(INFER))
            await until(lambda: held.started == 1)
            server.begin_shutdown(grace_s=10)
            async with asyncio.timeout(1):
                assert (await stream.read()).status == NOT_SERVING
                assert await stream.read() is grpc.aio.EOF  # told, and ended: stop need not wait for it
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as fresh:
                live = rpc.GRPCInferenceServiceStub(fresh).ServerLive(pb.ServerLiveRequest(), timeout=2)  # type: ignore[no-untyped-call]
                assert (await refusal(live)).code() == grpc.StatusCode.UNAVAILABLE
            assert not in_flight.done()
            held.release.set()
            assert (await in_flight).model_name == "m"

    asyncio.run(scenario())


def test_an_open_watch_stream_does_not_hold_the_shutdown() -> None:
    async def scenario() -> float:
        async with running(Plane()) as (server, channel):
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await stream.read()).status == SERVING
            loop = asyncio.get_running_loop()
            started = loop.time()
            await server.stop(grace_s=10)
            return loop.time() - started

    assert asyncio.run(scenario()) < 2, "the stop waited for the Watch stream"


def test_one_worker_binds_the_grpc_port_for_itself() -> None:
    async def scenario() -> None:
        async with running(Plane()) as (server, _):
            taken = f"127.0.0.1:{server.port}"
            with pytest.raises(RuntimeError):
                async with running(Plane(), address=taken):
                    pass
            assert port_problem("127.0.0.1", server.port or 0) is not None
        # several workers share it, and then only the start-up check sees another instance
        async with running(Plane(), reuse_port=True) as (shared, _):
            second = running(Plane(), address=f"127.0.0.1:{shared.port}", reuse_port=True)
            async with second:
                problem = port_problem("127.0.0.1", shared.port or 0)
            assert problem is not None
            assert "CROP_YIELD_GRPC_PORT" in problem

    asyncio.run(scenario())


def test_a_free_port_has_no_problem() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None


class Recorder(Held):
    """Keeps the request id each ModelInfer call ran under."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.ids: list[str | None] = []

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        self.ids.append(REQUEST_ID.get())
        return await super().ModelInfer(request, context)


def test_request_ids_are_kept_by_the_same_rule_as_over_http() -> None:
    async def scenario() -> list[str | None]:
        recorder = Recorder()
        async with running(Plane(), servicer=recorder) as (_, channel):
            stub = rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            for given in ("grpc-call-42", "two words", "x" * 129):
                await stub.ModelInfer(INFER, metadata=(("x-request-id", given),))
        return recorder.ids

    kept, *replaced = asyncio.run(scenario())
    assert kept == "grpc-call-42"
    for (
        request_id
    ) in replaced:  # a new id, as HTTP's RequestContext makes (tests/unit/service/test_guards.py)
        assert request_id is not None
        assert len(request_id) == 32
        assert int(request_id, 16) >= 0


def test_a_port_whose_last_connection_is_in_time_wait_is_free() -> None:
    """A restart right after a stop: the port's closed connections linger in TIME_WAIT, which
    must not read as another instance."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpcio's listeners do
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end of the port waits in TIME_WAIT
        client.close()
    assert port_problem("127.0.0.1", port) is None


def test_ipv6_hosts_are_bracketed_for_grpc_and_probed_bare() -> None:
    assert Settings(host="::", grpc_port=8001).grpc_address == "[::]:8001"
    assert Settings(host="[::1]", grpc_port=8001).grpc_address == "[::1]:8001"
    assert Settings(host="0.0.0.0", grpc_port=8001).grpc_address == "0.0.0.0:8001"
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert port_problem("::1", port) is None
    assert port_problem("[::1]", port) is None


class TimesOutInside(Held):
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        raise TimeoutError("a timeout of the handler's own, not the request deadline")


def test_a_timeout_raised_inside_a_call_is_not_the_request_deadline() -> None:
    async def scenario() -> None:
        expired, unknown = calls("ModelInfer", "DEADLINE_EXCEEDED"), calls("ModelInfer", "UNKNOWN")
        async with running(Plane(), servicer=TimesOutInside()) as (_, channel):
            stub = rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            assert (await refusal(stub.ModelInfer(INFER))).code() == grpc.StatusCode.UNKNOWN
        assert calls("ModelInfer", "UNKNOWN") == unknown + 1
        assert calls("ModelInfer", "DEADLINE_EXCEEDED") == expired

    asyncio.run(scenario())
