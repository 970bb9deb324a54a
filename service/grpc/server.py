"""The gRPC server of each worker: the Open Inference Protocol, standard health checking
(``grpc.health.v1.Health``) and server reflection, on ``CROP_YIELD_GRPC_PORT``.

BentoML 1.4 serves gRPC only for its legacy API, not for ``@bentoml.service`` classes, so
the server is the project's own: grpcio's asyncio server, started in the worker's start-up
hook on the worker's event loop, beside uvicorn, and sharing its data plane. Every worker
binds the same port with SO_REUSEPORT (grpcio's default), and the kernel spreads new
connections over them. Health reports SERVING once the plane is ready and NOT_SERVING from
the start of shutdown, so Kubernetes' ``grpc:`` probes and load balancers stop sending;
in-flight calls then get the graceful-shutdown timeout to finish.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from types import SimpleNamespace
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.grpc.admission import Admission
from service.grpc.calls import Behaviour
from service.grpc.observe import observed
from service.grpc.servicer import InferenceServicer
from service.inference.admission import MemoryBudget, Slots
from service.inference.dataplane import Plane

log = logging.getLogger("crop_yield.grpc")
INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
READY_POLL_S = 0.2


def authenticated(behaviour: Behaviour, token: str) -> Behaviour:
    """``authorization: Bearer <token>`` metadata required (constant-time compare)."""
    expected = f"Bearer {token}".encode()

    async def check(request: Any, context: grpc.aio.ServicerContext) -> Any:
        sent = next((str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), "")
        if not hmac.compare_digest(sent.encode(), expected):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)"
            )
        return await behaviour(request, context)

    return check


def guarded_servicer(
    servicer: rpc.GRPCInferenceServiceServicer, admission: Admission, token: str | None, timeout: float
) -> Any:
    """The servicer's RPCs, each behind ``service.grpc.calls``'s layers (composed once)."""
    guarded = SimpleNamespace()
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        behaviour: Behaviour = getattr(servicer, method.name)
        behaviour = admission.wrap(behaviour, method.name)
        if token:
            behaviour = authenticated(behaviour, token)
        setattr(guarded, method.name, observed(behaviour, INFERENCE_SERVICE, method.name, timeout))
    return guarded


class GrpcServer:
    def __init__(
        self,
        plane: Plane,
        address: str,
        max_message_bytes: int,
        slots: Slots,
        budget: MemoryBudget,
        auth_token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.plane = plane
        self.admission = Admission(slots, budget)
        self.timeout = timeout
        self.address = address
        self.max_message_bytes = max_message_bytes
        self.auth_token = auth_token
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._ready_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen and serve; the bound port."""
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        # health checking and reflection stay open (no token, no slot), like the HTTP probes
        servicer = guarded_servicer(
            InferenceServicer(self.plane), self.admission, self.auth_token, self.timeout
        )
        rpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (INFERENCE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        self.port = server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        self._ready_task = asyncio.get_running_loop().create_task(self._serving_once_ready())
        log.info("gRPC (Open Inference Protocol, health, reflection) on %s", self.address)
        return self.port

    async def _serving_once_ready(self) -> None:
        for service in ("", INFERENCE_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        while not self.plane.ready:
            await asyncio.sleep(READY_POLL_S)
        for service in ("", INFERENCE_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, then in-flight calls get ``grace_s`` seconds before they are cancelled."""
        if self._server is None:
            return
        if self._ready_task is not None:
            self._ready_task.cancel()
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        self._server = None
