"""Admission of gRPC calls: the same slots and memory budget as the worker's HTTP requests
(``service.inference.admission``), so ``CROP_YIELD_MAX_CONCURRENCY`` bounds both transports
together, and a refusal says when to retry.

The inference RPCs take a slot; the probes (ServerLive, ServerReady, ModelReady, like
``/livez`` and ``/readyz``), health checking and reflection do not. A message of at least
1 MiB first reserves its memory cost, as an HTTP body does, but only once grpcio has read
it: gRPC gives a server no look at the size before. Refusals are RESOURCE_EXHAUSTED with
``grpc-retry-pushback-ms`` trailing metadata: gRPC's retry policy reads it as HTTP
clients read Retry-After.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from service.grpc.calls import Behaviour
from service.inference.admission import MemoryBudget, Slots

log = logging.getLogger("crop_yield.grpc")
PROBES = frozenset({"ServerLive", "ServerReady", "ModelReady"})
RETRY_PUSHBACK = (("grpc-retry-pushback-ms", "1000"),)
"""One second, as the HTTP front end's Retry-After."""


class Admission:
    def __init__(self, slots: Slots, budget: MemoryBudget) -> None:
        self.slots = slots
        self.budget = budget

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        if method in PROBES:
            return behaviour

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            size = request.ByteSize()
            cost = self.budget.cost_of(size)
            if cost and not await self.budget.reserve(cost):
                await refuse(
                    context,
                    f"bulk requests in progress hold this worker's memory budget; a {size}-byte "
                    f"message waited {self.budget.wait_s:g} s (CROP_YIELD_MEMORY_WAIT)",
                )
            try:
                if not self.slots.take():
                    await refuse(
                        context,
                        f"{self.slots.in_flight} requests are in progress (CROP_YIELD_MAX_CONCURRENCY)",
                    )
                try:
                    return await behaviour(request, context)
                finally:
                    self.slots.give_back()
            finally:
                if cost:
                    self.budget.release(cost)

        return admitted


async def refuse(context: grpc.aio.ServicerContext, message: str) -> None:
    """RESOURCE_EXHAUSTED, asking to retry after the pushback (raises)."""
    message += "; retry after grpc-retry-pushback-ms"
    log.info("answered RESOURCE_EXHAUSTED: %s", message)
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=RETRY_PUSHBACK)
