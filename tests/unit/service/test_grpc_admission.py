"""gRPC admission (service.grpc.layers) in one event loop with a real grpc.aio server on
localhost, its RPCs guarded as the worker's are (service.grpc.server.inference_handler):
the worker's slots, shared with the HTTP gate, and its memory budget; the deadline; and
UNAVAILABLE before the model is loaded. The
servicer here holds ModelInfer until released, so calls in progress are under the test's
control; the real servicer is exercised against a served process (test_grpc.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.grpc.server import inference_handler
from service.grpc.servicer import InferenceServicer
from service.http.asgi import Message, Scope
from service.http.paths import is_probe
from service.http.traffic import RequestGate
from service.inference.admission import BUDGETED_FROM, COST_PER_BODY_BYTE, MemoryBudget, Slots
from service.inference.dataplane import DataPlane
from service.settings import Settings


class Held(rpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.port = 0
        """Where the test's server listens (set by ``serving``)."""

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self.started += 1
        await self.release.wait()
        return pb.ModelInferResponse(model_name=request.model_name)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)


@asynccontextmanager
async def serving(
    slots: Slots,
    budget: MemoryBudget,
    timeout: float = 30,
    servicer: rpc.GRPCInferenceServiceServicer | None = None,
) -> AsyncIterator[tuple[rpc.GRPCInferenceServiceStub, Held]]:
    held = Held()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((inference_handler(servicer or held, slots, budget, None, timeout),))
    port = held.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield rpc.GRPCInferenceServiceStub(channel), held  # type: ignore[no-untyped-call]
    finally:
        held.release.set()
        await server.stop(None)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


def test_calls_past_the_slots_are_refused_with_a_pushback_and_probes_take_none() -> None:
    async def scenario() -> None:
        slots = Slots(2)
        async with serving(slots, MemoryBudget(None, 1)) as (stub, held):
            first = [
                asyncio.ensure_future(stub.ModelInfer(pb.ModelInferRequest(model_name="m"))) for _ in range(2)
            ]
            await until(lambda: held.started == 2)
            error = await refusal(stub.ModelInfer(pb.ModelInferRequest(model_name="m")))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 requests are in progress (CROP_YIELD_MAX_CONCURRENCY)" in (error.details() or "")
            assert ("grpc-retry-pushback-ms", "1000") in tuple(error.trailing_metadata() or ())
            assert (await stub.ServerLive(pb.ServerLiveRequest())).live  # a probe: no slot
            held.release.set()
            assert [a.model_name for a in await asyncio.gather(*first)] == ["m", "m"]
            assert slots.in_flight == 0
            assert (await stub.ModelInfer(pb.ModelInferRequest(model_name="m"))).model_name == "m"

    asyncio.run(scenario())


def test_http_and_grpc_take_from_the_same_slots() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        http_release = asyncio.Event()

        async def slow_app(scope: Scope, receive: Any, send: Any) -> None:
            await http_release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        gate = RequestGate(slow_app, max_bytes=100, body_timeout=1, slots=slots, exempt=is_probe)

        async def http_call() -> int:
            sent: list[Message] = []

            async def receive() -> Message:
                return {"type": "http.request", "body": b"{}", "more_body": False}

            async def send(message: Message) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
            await gate(scope, receive, send)
            return int(sent[0]["status"])

        async with serving(slots, MemoryBudget(None, 1)) as (stub, held):
            http = asyncio.ensure_future(http_call())
            await until(lambda: slots.in_flight == 1)
            error = await refusal(stub.ModelInfer(pb.ModelInferRequest(model_name="m")))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            http_release.set()
            assert await http == 200

            grpc_call = asyncio.ensure_future(stub.ModelInfer(pb.ModelInferRequest(model_name="m")))
            await until(lambda: held.started == 1)
            assert await http_call() == 429  # the gRPC call holds the only slot
            held.release.set()
            await grpc_call
            assert slots.in_flight == 0

    asyncio.run(scenario())


def test_large_messages_reserve_memory_and_wait_for_it() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(budget_bytes=BUDGETED_FROM, wait_s=0.2)
        bulk = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * BUDGETED_FROM])
        # on the wire: model_name (tag, length, "m") and one raw entry (tag, a 3-byte varint length)
        wire = 3 + 1 + 3 + BUDGETED_FROM
        async with serving(Slots(8), budget) as (stub, held):
            assert await budget.reserve(1)  # another bulk call holds the budget
            error = await refusal(stub.ModelInfer(bulk))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"a {wire}-byte message waited 0.2 s (CROP_YIELD_MEMORY_WAIT)" in (error.details() or "")
            small = asyncio.ensure_future(stub.ModelInfer(pb.ModelInferRequest(model_name="m")))
            await until(lambda: held.started == 1)  # small messages are not budgeted
            budget.release(1)
            waiting = asyncio.ensure_future(stub.ModelInfer(bulk))
            await until(lambda: held.started == 2)
            assert budget.reserved == wire * COST_PER_BODY_BYTE
            held.release.set()
            await asyncio.gather(small, waiting)
            assert budget.reserved == 0

    asyncio.run(scenario())


def test_a_message_is_budgeted_by_its_length_on_the_wire() -> None:
    """protobuf accepts a field sent twice (the last one wins), and re-serializing drops the
    first: the bytes that arrived are what the budget counts, not what ByteSize() says."""

    async def scenario() -> None:
        budget = MemoryBudget(budget_bytes=BUDGETED_FROM, wait_s=0.2)
        canonical = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * BUDGETED_FROM])
        wire = b"\x0a\x01x" + canonical.SerializeToString()  # model_name "x", then "m"
        assert len(wire) == canonical.ByteSize() + 3
        async with serving(Slots(8), budget) as (_, held):
            assert await budget.reserve(1)  # another bulk call holds the budget
            async with grpc.aio.insecure_channel(f"127.0.0.1:{held.port}") as channel:
                call = channel.unary_unary(
                    "/inference.GRPCInferenceService/ModelInfer",
                    request_serializer=None,  # the bytes as they are
                    response_deserializer=pb.ModelInferResponse.FromString,
                )
                error = await refusal(call(wire))
            assert f"a {len(wire)}-byte message waited" in (error.details() or "")
            budget.release(1)

    asyncio.run(scenario())


def test_a_call_past_the_request_timeout_is_answered_deadline_exceeded() -> None:
    async def scenario() -> None:
        slots = Slots(4)
        async with serving(slots, MemoryBudget(None, 1), timeout=0.2) as (stub, _):
            error = await refusal(stub.ModelInfer(pb.ModelInferRequest(model_name="m")))
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert error.details() == "not answered within 0.2 s (CROP_YIELD_REQUEST_TIMEOUT)"
            assert slots.in_flight == 0  # the slot is given back

    asyncio.run(scenario())


def test_calls_before_the_model_is_loaded_are_unavailable_with_a_pushback() -> None:
    async def scenario() -> None:
        servicer = InferenceServicer(DataPlane(Settings()))  # nothing loaded
        async with serving(Slots(4), MemoryBudget(None, 1), servicer=servicer) as (stub, _):
            assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
            error = await refusal(stub.ModelInfer(pb.ModelInferRequest(model_name="crop_yield")))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in (error.details() or "")
            assert ("grpc-retry-pushback-ms", "1000") in tuple(error.trailing_metadata() or ())

    asyncio.run(scenario())
