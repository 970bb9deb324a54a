"""``grpc.health.v1.Health`` for one worker: Check and Watch over the same statuses.

The project's own rather than grpcio-health-checking's servicer for one reason: at shutdown
that servicer tells Watch streams NOT_SERVING and keeps them open, and grpcio's
``server.stop(grace)`` waits for every open call, so one client watching health (gRPC's
client-side health checking does) held every worker's shutdown for its whole grace period.
Here a Watch stream ends once it has said NOT_SERVING at shutdown. Its handler
(``health_handler``) reads requests as the inference service's do: a message that is not
valid protobuf is INVALID_ARGUMENT (``service.grpc.wire``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.grpc.layers import well_formed
from service.grpc.wire import parsing

SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
Status = int
"""A ``HealthCheckResponse.ServingStatus`` value."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # grpcio's stubs are untyped
    """The same status for every one of ``services`` ("" is the server as a whole)."""

    def __init__(self, services: Iterable[str], status: Status = NOT_SERVING) -> None:
        self.services = frozenset(services)
        self.status = status
        self.final = False
        """Shutdown has begun: NOT_SERVING for good."""
        self._changed = asyncio.Condition()

    async def Check(  # noqa: N802 (the protocol's method name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self.services:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r} here")
        return health_pb2.HealthCheckResponse(status=self.status)

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Each change of status as it happens; the stream ends after NOT_SERVING at shutdown."""
        sent: Status | None = None
        async with self._changed:
            while True:
                status = self.status if request.service in self.services else UNKNOWN
                if status != sent:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    sent = status
                if self.final:
                    return
                await self._changed.wait()

    async def set(self, status: Status) -> None:
        """A new status for every service (ignored once shutdown has begun)."""
        async with self._changed:
            if not self.final:
                self.status = status
                self._changed.notify_all()

    async def shut_down(self) -> None:
        """NOT_SERVING for good, and every Watch stream told so and ended."""
        async with self._changed:
            self.final = True
            self.status = NOT_SERVING
            self._changed.notify_all()


def health_handler(health: Health) -> grpc.GenericRpcHandler:
    """Check and Watch of ``health``, their requests read by ``service.grpc.wire.parsing``."""
    read = parsing(health_pb2.HealthCheckRequest)
    write = health_pb2.HealthCheckResponse.SerializeToString
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Check": grpc.unary_unary_rpc_method_handler(well_formed(health.Check), read, write),
            "Watch": grpc.unary_stream_rpc_method_handler(well_formed(health.Watch), read, write),
        },
    )
