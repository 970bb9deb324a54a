"""Admission, shared by every front end of a worker (HTTP and gRPC): how many requests may
be in progress (``Slots``), and how much memory bulk requests may hold (``MemoryBudget``).

Slots: ``CROP_YIELD_MAX_CONCURRENCY`` shared out among the workers, and within a worker
one count for both transports, so a gRPC client cannot take what the limit keeps for HTTP
ones or the other way round. One event loop per worker, so a plain counter is the
semaphore; a request past the limit is refused at once (429, RESOURCE_EXHAUSTED), not
queued, so clients back off instead of piling up behind the deadline.

Memory: bulk requests are admitted by what they cost in memory, not by count.

A 1,000,000-row call holds its body, the parsed columns, the predictions and the encoded
answer at once: hundreds of MiB (``COST_PER_BODY_BYTE``, measured with
``make bench-bursts``). Enough of them at once exceed the container's memory limit, and the
kernel then kills the worker with every client's request in it. So each worker has a budget
(``budget_bytes``, from ``service.observability.runtime.memory_budget``) and a request whose
body is at least ``BUDGETED_FROM`` bytes reserves its estimated cost: over HTTP before most
of its body is read (the client's upload waits meanwhile, its bytes held by TCP, not by the
worker), over gRPC once grpcio has read the message. An HTTP reservation made on the
strength of Content-Length is held only while the body arrives at a pace that finishes it
by the request deadline, and given back at once when it falls behind (``release`` admits
the next in line), so clients cannot hold the budget with bytes they do not send
(``service.http.bodies``). Reservations wait in arrival order for up to ``wait_s``; past
that the answer is 503 with Retry-After (RESOURCE_EXHAUSTED over gRPC).
A request is always admitted when no other holds any budget, so one call larger than the
budget still runs alone. Small requests never touch the budget.

Once no reservation has been held for ``TRIM_AFTER_IDLE_S`` the worker hands freed heap back
to the system (``runtime.return_freed_memory_soon``): without it, resting memory after bursts
stayed hundreds of MiB above where it started. Not after every call: a trim walks the heap
while holding malloc's locks, and trimming after each of a stream of bulk calls cost a
quarter of their throughput (the heap is reused between them anyway).
"""

from __future__ import annotations

import asyncio
import collections

from service.observability import runtime

BUDGETED_FROM = 1 << 20
"""Bodies below 1 MiB (up to ~40,000 JSON rows) are not budgeted: their cost is small and
the hot single-row path must stay free of it."""
TRIM_AFTER_IDLE_S = 1.0
COST_PER_BODY_BYTE = 10
"""Peak worker memory per body byte while a bulk call is answered: measured 8.3-9.1 for
1,000,000-row calls, JSON (parsed into Python floats, answered in JSON about as large) and
binary tensors alike; rounded up."""


class Slots:
    """At most ``limit`` requests in progress at once in this worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def take(self) -> bool:
        """One slot, or False when every slot is taken."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def give_back(self) -> None:
        self.in_flight -= 1


class MemoryBudget:
    """Reservations against ``budget_bytes`` (``None``: unlimited) within one event loop."""

    def __init__(self, budget_bytes: int | None, wait_s: float) -> None:
        self.budget_bytes = budget_bytes
        self.wait_s = wait_s
        self.reserved = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._trim: asyncio.TimerHandle | None = None

    @staticmethod
    def cost_of(body_bytes: int) -> int:
        """The memory a request of ``body_bytes`` reserves; 0 (not budgeted) below ``BUDGETED_FROM``."""
        return body_bytes * COST_PER_BODY_BYTE if body_bytes >= BUDGETED_FROM else 0

    def _fits(self, cost: int) -> bool:
        return self.reserved == 0 or self.budget_bytes is None or self.reserved + cost <= self.budget_bytes

    async def reserve(self, cost: int) -> bool:
        """Reserve ``cost`` bytes, waiting behind earlier reservations; False after ``wait_s``."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        if not self._waiting and self._fits(cost):
            self.reserved += cost
            return True
        turn = asyncio.get_running_loop().create_future()
        entry = (cost, turn)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except BaseException as exc:
            admitted = turn.done() and not turn.cancelled()
            if isinstance(exc, TimeoutError) and admitted:  # admitted as the wait ran out
                return True
            if admitted:  # then cancelled: give it back
                self.release(cost)
            elif entry in self._waiting:
                self._waiting.remove(entry)
                self._admit_waiting()  # a large request giving up may let smaller ones in
            if isinstance(exc, TimeoutError):
                return False
            raise
        return True

    def release(self, cost: int) -> None:
        self.reserved -= cost
        self._admit_waiting()
        if self.reserved == 0 and not self._waiting and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_AFTER_IDLE_S, self._trim_if_idle)

    def _trim_if_idle(self) -> None:
        self._trim = None
        if self.reserved == 0:
            runtime.return_freed_memory_soon()

    def _admit_waiting(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            cost, turn = self._waiting.popleft()
            if not turn.done():  # else given up in this same loop iteration
                self.reserved += cost
                turn.set_result(None)
