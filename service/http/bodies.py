"""Reading a request body within its limits, and holding a bulk body's memory reservation
only while the body keeps arriving (used by ``service.http.traffic.RequestGate``).

How slow a body may be is measured as the standard defences do (nginx's
``client_body_timeout``, Apache's ``mod_reqtimeout``), not as one deadline for the whole
body, which refused well-behaved clients whose large uploads took long because the server
was busy: no bytes for ``body_timeout`` s (inactivity), or, once ``rate_grace`` s have
passed, an average below ``min_rate`` bytes/s (0: no minimum).

Memory reservations of bulk bodies (``service.inference.admission``). A body whose
Content-Length is at least ``BUDGETED_FROM`` reserves its memory cost before most of it is
read, so that concurrent bulk uploads queue for the budget with their bytes waiting in TCP,
not in the worker. A reservation taken on the strength of a declared size alone let a
client hold it with bytes it never sent: a few connections declaring 40 MiB and sending a
byte every few seconds (inside the inactivity limit, long before the minimum rate applies)
held a 2 GiB worker's whole budget while honest bulk calls waited or got 503. So a
declaration is believed only while the body keeps it (``Pace``):

- probation: a body reads its first ``1/PROBATION_SHARE`` unreserved before it queues for
  its reservation (a sliver next to the cost it reserves, ``COST_PER_BODY_BYTE`` times the
  body). An honest client sends that within its first round trips; a trickling one never
  gets a reservation at all, however many connections it opens.
- pace: once admitted, the body must keep arriving at an average rate that finishes it by
  the request deadline (``CROP_YIELD_REQUEST_TIMEOUT``, from when the request arrived), judged
  after ``PACE_GRACE_S`` (TCP's ramp after the wait, and event-loop pauses while other bulk
  calls are parsed). It is judged on a timer, not only when bytes arrive (a trickler's next
  byte may be seconds away): the moment at which the bytes so far fall behind is known, and
  the wait for the next bytes ends there. A body that falls behind gives its reservation
  back at once, which admits the next queued ones, and carries on unreserved: once all of
  it has arrived it reserves its cost as a chunked body does (a body that cannot finish
  before the deadline would only be answered 504 anyway). The requirement grows linearly
  from the end of the grace to the whole body at the deadline, below the straight line of
  any client on course to finish in time; bytes that have reached the server but that the
  event loop, busy with other calls, has not handed over yet count as arrived.

Why both, and not a grace alone: with a grace alone, each connection that declares a large
body would hold the budget for the grace without sending anything, so a stream of new
trickling connections, queued ahead of an honest call, would delay it by the grace times
their number over how many fit at once. With probation, a connection must send real bytes
before it holds anything, and once admitted it must keep sending at the pace an honest
upload of its size would: holding the budget costs about the bandwidth of honest bulk
uploads (figures: docs/architecture.md, "Figures behind the design";
``make bench-slow-bodies``). Bodies below ``BUDGETED_FROM`` (the hot single-row path) have
no ``Pace``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.http.asgi import Message, Receive
from service.http.deadlines import IDLE, Watched

if TYPE_CHECKING:  # the worker's admission objects are handed in (service.inference.admission)
    from service.inference.admission import MemoryBudget

PROBATION_SHARE = 32
"""A budgeted body reads its first 1/32 before it queues for its memory reservation."""
PACE_GRACE_S = 1.0
"""Seconds after a reservation is admitted before the body's pace is judged."""

log = logging.getLogger("crop_yield.traffic")


class TooLargeError(Exception):
    """More bytes than ``max_bytes`` (413)."""


class TooSlowError(Exception):
    """Stalled or below the minimum rate (408); the message says which."""


class MemoryBusyError(Exception):
    """The reservation waited ``MemoryBudget.wait_s`` in vain (503)."""


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int
    body_timeout: float
    min_rate: float = 0
    rate_grace: float = 0

    def idle(self) -> TooSlowError:
        return TooSlowError(
            f"no bytes of the request body arrived for {self.body_timeout:g} s (CROP_YIELD_BODY_TIMEOUT)"
        )

    def check_rate(self, size: int, elapsed: float) -> None:
        if elapsed > self.rate_grace and size < self.min_rate * elapsed:
            raise TooSlowError(
                f"the request body arrives at {size / elapsed:,.0f} bytes/s, below "
                f"{self.min_rate:g} bytes/s (CROP_YIELD_BODY_MIN_RATE) after {self.rate_grace:g} s"
            )


class Pace:
    """A declared bulk body's memory reservation (module docstring): queued for once the
    first share has arrived, held while the body keeps pace with ``deadline`` (the event
    loop's clock; None: held until given back), given back at most once."""

    def __init__(
        self, budget: MemoryBudget, cost: int, declared: int, deadline: float | None, grace: float
    ) -> None:
        self.budget = budget
        self.wanted = cost
        self.declared = declared
        self.deadline = deadline
        self.grace = grace
        self.probation = declared // PROBATION_SHARE
        self.cost = 0
        """Held now."""
        self.queued = False
        self.behind_at = math.inf
        """When the bytes so far fall behind the pace (while held)."""
        self._from = self._admitted_size = self._per_byte = 0.0

    def due(self, size: int) -> bool:
        """Whether the body, ``size`` bytes so far, has earned its place in the queue."""
        return not self.queued and size >= self.probation

    async def admit(self, size: int) -> float:
        """Wait for the reservation (``MemoryBudget.reserve``); the seconds waited, or
        ``MemoryBusyError``."""
        self.queued = True
        loop = asyncio.get_running_loop()
        asked = loop.time()
        if not await self.budget.reserve(self.wanted):
            raise MemoryBusyError
        self.cost = self.wanted
        now = loop.time()
        if self.deadline is not None:
            # From the end of the grace, the bytes still to come are due in a straight line up
            # to the deadline; behind it means the average pace since admission no longer
            # finishes the body in time.
            self._from, self._admitted_size = now + self.grace, size
            self._per_byte = max(self.deadline - self._from, 0.0) / max(self.declared - size, 1)
            self.behind_at = self._from
        return now - asked

    def arrived(self, size: int) -> None:
        if self.behind_at != math.inf:
            self.behind_at = self._from + (size - self._admitted_size) * self._per_byte

    def fall_behind(self, size: int) -> None:
        log.info(
            "a %d-byte body fell behind the pace that finishes it by the request deadline "
            "(%d bytes so far): its memory reservation is given back",
            self.declared,
            size,
        )
        self.give_back()

    def give_back(self) -> None:
        """Release what is held (waking queued reservations), if anything."""
        self.behind_at = math.inf
        if self.cost:
            cost, self.cost = self.cost, 0
            self.budget.release(cost)


async def read_body(
    receive: Receive, limits: BodyLimits, pace: Pace | None = None, watched: Watched | None = None
) -> bytes | None:
    """The whole body (None when the client disconnected), within ``limits``
    (``TooLargeError``, ``TooSlowError``) and, for a declared bulk body, its ``pace``
    (``MemoryBusyError``); the wait for the next bytes ends at the inactivity limit or when
    the body falls behind, whichever comes first. Without a pace, the request's ``watched``
    entry (``service.http.deadlines``), when given, keeps the inactivity limit instead of a
    timer of its own."""
    if watched is not None and pace is None:
        try:
            return await _read_watched(receive, limits, watched)
        finally:
            watched.idle_at = math.inf
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    started = last = loop.time()
    look_again = False
    while True:
        wake = last + limits.body_timeout
        if pace is not None:
            if pace.due(size):
                started += await pace.admit(size)  # the wait was the server's, not the client's
                last = loop.time()
                wake = last + limits.body_timeout
            wake = min(wake, pace.behind_at, loop.time() if look_again else math.inf)
        try:
            async with asyncio.timeout_at(wake):
                message: Message = await receive()
        except TimeoutError:
            if pace is not None and pace.cost and loop.time() < last + limits.body_timeout:
                # Behind, by the bytes read so far. Bytes the server holds but has not handed
                # over count too: after the event loop was busy elsewhere (another bulk call
                # parsed), they and this timer are ready at once, and the timer cancels the
                # read. So look once more without waiting before judging.
                if not look_again:
                    look_again = True
                    continue
                look_again = False
                pace.fall_behind(size)
                continue
            raise limits.idle() from None
        look_again = False
        chunk = _chunk(message, size, limits)
        if chunk is None:
            return None
        size += len(chunk)
        chunks.append(chunk)
        last = loop.time()
        if pace is not None:
            pace.arrived(size)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if limits.min_rate:
            limits.check_rate(size, last - started)


async def _read_watched(receive: Receive, limits: BodyLimits, watched: Watched) -> bytes | None:
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    started = last = loop.time()
    while True:
        watched.idle_at = last + limits.body_timeout
        try:
            message: Message = await receive()
        except asyncio.CancelledError:
            if not watched.expired_by(IDLE):
                raise
            raise limits.idle() from None
        chunk = _chunk(message, size, limits)
        if chunk is None:
            return None
        size += len(chunk)
        if not message.get("more_body", False):
            return chunk if not chunks else b"".join([*chunks, chunk])
        chunks.append(chunk)
        last = loop.time()
        if limits.min_rate:
            limits.check_rate(size, last - started)


def _chunk(message: Message, size: int, limits: BodyLimits) -> bytes | None:
    """A message's bytes after ``size`` already read; None when the client disconnected."""
    if message["type"] != "http.request":
        return None
    chunk: bytes = message.get("body", b"")
    if size + len(chunk) > limits.max_bytes:
        raise TooLargeError
    return chunk


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read body, then defers to the server."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
