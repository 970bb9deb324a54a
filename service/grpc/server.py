"""The gRPC server of each worker: the Open Inference Protocol, standard health checking
(``grpc.health.v1.Health``) and server reflection, on ``CROP_YIELD_GRPC_PORT``.

BentoML 1.4 serves gRPC only for its legacy API, not for ``@bentoml.service`` classes, so
the server is the project's own: grpcio's asyncio server, started in the worker's start-up
hook on the worker's event loop, beside uvicorn, and sharing its data plane. With several
workers each binds the same port with SO_REUSEPORT and the kernel spreads new connections
over them; with one, the port is bound exclusively, so a second instance fails to start
instead of sharing it. Health says NOT_SERVING until the plane is ready and again from the
moment shutdown begins (SIGTERM: ``begin_shutdown``), so Kubernetes' ``grpc:`` probes and
load balancers stop sending; in-flight calls then finish within the same deadline as
HTTP's.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_reflection.v1alpha import reflection

from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.grpc.health import NOT_SERVING, SERVING, Health, health_handler
from service.grpc.health import SERVICE_NAME as HEALTH_SERVICE
from service.grpc.layers import OPEN, admitted, authenticated, observed, sized, well_formed
from service.grpc.payloads import payload_logged
from service.grpc.wire import parsing
from service.inference.admission import MemoryBudget, Slots
from service.inference.dataplane import Plane
from service.observability.payloads import PayloadLog
from service.observability.statistics import STATISTICS
from service.observability.tracing import Tracer

log = logging.getLogger("crop_yield.grpc")
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
INFERENCE_SERVICE = SERVICE.full_name
READY_POLL_S = 0.2
READABLE = frozenset({"RepositoryIndex"})
"""Not probes (they take a slot), but readable without the token, as over HTTP."""
PREDICTIONS = frozenset({"ModelInfer"})
"""The RPCs payload logging sees (``service.grpc.payloads``) and Triton's statistics count."""


def inference_handler(
    servicer: rpc.GRPCInferenceServiceServicer,
    slots: Slots,
    budget: MemoryBudget,
    token: str | None,
    timeout: float,
    sticky_header: str = "x-request-id",
    payloads: PayloadLog | None = None,
    tracer: Tracer | None = None,
) -> grpc.GenericRpcHandler:
    """The servicer's RPCs, each behind the layers of ``service.grpc.layers``; with
    ``payloads``, the predictions' innermost layer logs them (``service.grpc.payloads``)."""
    handlers = {}
    for method in SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        read = parsing(request_type)
        keep_size = False
        if payloads is not None and method.name in PREDICTIONS:  # predictions: never an open RPC
            behaviour = payload_logged(behaviour, payloads)
            keep_size = True  # it counts the message's bytes on the wire
        if method.name not in OPEN:
            behaviour = admitted(behaviour, slots, budget, keep_size)
            read = sized(read)
        behaviour = well_formed(behaviour)
        if token and method.name not in OPEN | READABLE:
            behaviour = authenticated(behaviour, token)
        route = f"/{INFERENCE_SERVICE}/{method.name}"
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            observed(
                behaviour, route, method.name, timeout, sticky_header, tracer, method.name in PREDICTIONS
            ),
            request_deserializer=read,
            response_serializer=response_type.SerializeToString,
        )
    return CountedHandler(grpc.method_handlers_generic_handler(INFERENCE_SERVICE, handlers))


class CountedHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpcio is untyped here
    """Counts each call of a known method as it begins, before its message arrives: grpcio
    looks the handler up then, while a call the transport refuses (a message over
    ``grpc.max_receive_message_length``, or one that inflates past it) never reaches the
    handler, nor any count of ``observed``."""

    def __init__(self, handler: grpc.GenericRpcHandler) -> None:
        self.handler = handler
        self.prefix = f"/{INFERENCE_SERVICE}/"

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self.handler.service(handler_call_details)
        if found is not None:
            method: str = handler_call_details.method
            STATISTICS.grpc_call_started(method.removeprefix(self.prefix))
        return found


class GrpcServer:
    """One worker's server of ``handler`` (``inference_handler``), health and reflection;
    ``plane.ready`` decides health."""

    def __init__(
        self,
        plane: Plane,
        handler: grpc.GenericRpcHandler,
        address: str,
        max_message_bytes: int,
        reuse_port: bool = False,
    ) -> None:
        self.plane = plane
        self.handler = handler
        self.address = address
        self.options = [
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ]
        self.health = Health(("", INFERENCE_SERVICE))
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen and serve; the bound port (RuntimeError when it cannot be bound)."""
        server = grpc.aio.server(options=self.options)
        server.add_generic_rpc_handlers((self.handler,))
        # health checking and reflection stay open (no token, no slot), like the HTTP probes
        server.add_generic_rpc_handlers((health_handler(self.health),))
        reflection.enable_server_reflection(
            (INFERENCE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        # Before the first connection can ask: SERVING only once the plane is ready.
        await self.health.set(SERVING if self.plane.ready else NOT_SERVING)
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        if not self.plane.ready:
            self._ready_task = asyncio.get_running_loop().create_task(self._serving_once_ready())
        log.info("gRPC (Open Inference Protocol, health, reflection) on %s", self.address)
        return self.port

    async def _serving_once_ready(self) -> None:
        while not self.plane.ready:
            await asyncio.sleep(READY_POLL_S)
        await self.health.set(SERVING)

    def begin_shutdown(self, grace_s: float) -> None:
        """From now: health NOT_SERVING, no new calls; calls in flight get ``grace_s``
        seconds, then are cancelled. Returns at once (``stop`` waits)."""
        if self._server is None or self._stopping is not None:
            return
        if self._ready_task is not None:
            self._ready_task.cancel()
        self._stopping = asyncio.get_running_loop().create_task(self._shut_down(self._server, grace_s))

    async def _shut_down(self, server: grpc.aio.Server, grace_s: float) -> None:
        await self.health.shut_down()  # Watch streams told, and ended: stop need not wait for them
        await server.stop(grace_s)

    async def stop(self, grace_s: float) -> None:
        """``begin_shutdown`` (unless it has begun), then wait until every call has ended."""
        self.begin_shutdown(grace_s)
        if self._stopping is not None:
            await self._stopping
        self._server = None
