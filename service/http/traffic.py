"""Traffic control in front of every route: request ids, the request deadline, the body's
inactivity and rate limits, the body-size limit and the concurrency limit.

Why these are the service's own and not BentoML's: BentoML's concurrency limit sits
outside the service's middleware and counts a request from its first byte, so clients
that send headers and part of a body, then stall, each held a slot until the request
timeout; a few hundred of them locked everyone else out (429) for 30 s, repeatably. Here
a request takes a slot only once its whole body has arrived, and a body must arrive
without stalling for ``CROP_YIELD_BODY_TIMEOUT`` seconds (and, after a grace period, at
a minimum average rate) or the request is answered 408 and the
connection closed. Connections whose headers never complete never reach the app at all:
they hold a socket (a file descriptor) and nothing else.

``RequestContext`` is the outermost of the service's middleware, so its id reaches every
response it can see, errors included. Its deadline is the only one: BentoML's timeout
middleware is left off the stack (``service.bentoml_internals.drop_bentoml_middleware``;
its 504 carried no request id). The deadline is kept on one timer per worker
(``service.http.deadlines``). It leaves the deadline in the scope (``DEADLINE``) for the
gate's memory reservations, which a bulk body holds only while it keeps arriving
(``service.http.bodies``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.http import deadlines, errors
from service.http.asgi import ASGIApp, Message, Receive, Scope, Send, header
from service.http.bodies import (
    PACE_GRACE_S,
    BodyLimits,
    MemoryBusyError,
    Pace,
    TooLargeError,
    TooSlowError,
    read_body,
    replay,
)
from service.http.errors import send_error
from service.http.paths import is_prediction
from service.observability import context
from service.observability.statistics import STATISTICS
from service.observability.tracing import Tracer

if TYPE_CHECKING:  # the worker's admission objects are handed in (service.inference.admission)
    from service.inference.admission import MemoryBudget, Slots

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEADLINE = "crop_yield.deadline"
"""Scope key: the request's deadline on the event loop's clock (``RequestContext``)."""
WATCHED = "crop_yield.watched"
"""Scope key: the request's ``deadlines.Watched`` entry (``RequestContext``), which the body
reader sets its inactivity limit on."""

log = logging.getLogger("crop_yield.traffic")


class RequestContext:
    """``X-Request-ID`` in and out, and the request deadline (504).

    The id is the client's when sane, else a new one; it is set in a context variable
    (``service.observability.context``, read by the log filter) and added to the response headers.
    """

    def __init__(
        self, app: ASGIApp, timeout: float, sticky_header: str = "x-request-id", tracer: Tracer | None = None
    ) -> None:
        """``sticky_header``: the header canary weights hash (``context.ROUTING_KEY``) when a
        request has it; the request id otherwise. ``tracer``: W3C trace context in (the
        ``traceparent`` header) and out (``traceresponse``), and the spans of sampled requests."""
        self.app = app
        self.timeout = timeout
        self.sticky = None if sticky_header == "x-request-id" else sticky_header.encode()
        self.tracer = tracer
        self.deadlines = deadlines.Deadlines(timeout / 10)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = None if self.sticky is None else header(scope, self.sticky)
        request_id = context.begin(header(scope, b"x-request-id"), scope["path"], key)
        added = [(b"x-request-id", request_id.encode())]
        trace = None
        if self.tracer is not None:
            trace = self.tracer.begin(header(scope, b"traceparent"))
            if trace is not None:
                if trace.sampled:
                    method, path = scope["method"], scope["path"]
                    attributes = {
                        "http.request.method": method,
                        "url.path": path,
                        "crop_yield.request_id": request_id,
                    }
                    self.tracer.open(trace, f"{method} {path}", attributes)
                added.append((b"traceresponse", trace.traceresponse().encode()))
        started = False
        status = 0
        call = STATISTICS.begin() if is_prediction(scope["path"]) else None

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        # The deadline, shared with RequestGate (its memory reservations) and the body reader.
        scope[DEADLINE] = when = asyncio.get_running_loop().time() + self.timeout
        scope[WATCHED] = watched = self.deadlines.watch(when)
        try:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.deadlines.done(watched)
            if not started:
                # Only a client that left mid-body gets no answer. Answer anyway, so that the
                # request is counted (499) and nothing outside waits for a response to start
                # (BentoML's timeout middleware, when it was on the stack, held such a request
                # pending until its own timeout, and a graceful shutdown with it).
                log.info("client closed the connection before the answer", extra={"status": 499})
                await send_error(send_with_id, scope, errors.CLIENT_CLOSED, [], "the client went away")
        except asyncio.CancelledError:
            if not watched.expired_by(deadlines.DEADLINE):
                raise
            log.warning("answered 504: not done within %s s", self.timeout, extra={"status": 504})
            if not started:
                await send_error(send_with_id, scope, errors.TIMEOUT, [], context.past_deadline(self.timeout))
        finally:
            if call is not None:
                STATISTICS.end(call, 0 < status < 400)
            if trace is not None and trace.span is not None:
                self.tracer.end(trace, status, status >= 500 or not status)  # type: ignore[union-attr]


class RequestGate:
    """Receive the whole body first (``service.http.bodies``: at most ``max_bytes``, without
    stalling for ``body_timeout`` s, and after ``rate_grace`` s at ``min_rate`` bytes/s at
    least), then take one of the worker's ``slots`` (shared with gRPC,
    ``service.inference.admission``) for the rest of the request. A stalled or too slow body
    is 408 and a body too large 413, both with the connection closed; 429 with Retry-After
    when every slot is taken. Paths where ``exempt(path)`` (probes, metrics) take no slot.
    One event loop per worker, so a plain counter is the semaphore.

    Bulk bodies also reserve their memory cost from ``budget``: when Content-Length says
    their size, once their first share has arrived and for as long as they keep pace with
    the request deadline (``bodies.Pace``, judged ``pace_grace`` s after admission; without
    ``RequestContext`` in front there is no deadline, and the reservation is held until
    answered); otherwise once read. 503 with Retry-After when the budget stays taken.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_timeout: float,
        slots: Slots,
        exempt: Callable[[str], bool],
        min_rate: float = 0,
        rate_grace: float = 0,
        budget: MemoryBudget | None = None,
        pace_grace: float = PACE_GRACE_S,
    ) -> None:
        self.app = app
        self.limits = BodyLimits(max_bytes, body_timeout, min_rate, rate_grace)
        self.budget = budget
        self.pace_grace = pace_grace
        self.slots = slots
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reserved = 0  # reserved once the whole body was read
        pace: Pace | None = None  # reserved on the strength of Content-Length
        try:
            if scope["method"] in BODY_METHODS:
                declared = header(scope, b"content-length")
                if declared is not None and (not declared.isdigit() or int(declared) > self.limits.max_bytes):
                    await self._too_large(send, scope)
                    return
                if (
                    declared is not None
                    and self.budget is not None
                    and (cost := self.budget.cost_of(int(declared)))
                ):
                    pace = Pace(self.budget, cost, int(declared), scope.get(DEADLINE), self.pace_grace)
                body = await self._receive(scope, send, receive, pace, int(declared or 0))
                if body is None:  # answered (408, 413, 503) or the client disconnected
                    return
                if not (pace and pace.cost) and (reserved := await self._reserve(scope, send, len(body))) < 0:
                    return
                receive = replay(body, receive)
            await self._take_slot(scope, receive, send)
        finally:
            if reserved > 0:
                assert self.budget is not None
                self.budget.release(reserved)
            if pace is not None:
                pace.give_back()

    async def _receive(
        self, scope: Scope, send: Send, receive: Receive, pace: Pace | None, declared: int
    ) -> bytes | None:
        """The body; None when answered (408, 413, 503) or the client disconnected."""
        try:
            return await read_body(receive, self.limits, pace, scope.get(WATCHED))
        except TooSlowError as exc:
            log.info("answered 408: %s", exc, extra={"status": 408})
            await send_error(send, scope, errors.REQUEST_TIMEOUT, ["body"], str(exc))
        except TooLargeError:
            await self._too_large(send, scope)
        except MemoryBusyError:
            await self._memory_busy(scope, send, declared)
        return None

    async def _reserve(self, scope: Scope, send: Send, size: int) -> int:
        """The memory cost reserved for a body of ``size`` bytes (0: not budgeted); -1 when
        refused (answered 503)."""
        if self.budget is None or not (cost := self.budget.cost_of(size)):
            return 0
        if await self.budget.reserve(cost):
            return cost
        await self._memory_busy(scope, send, size)
        return -1

    async def _memory_busy(self, scope: Scope, send: Send, size: int) -> None:
        assert self.budget is not None
        log.info("answered 503: no memory budget for a %d-byte body", size, extra={"status": 503})
        await send_error(
            send,
            scope,
            errors.MEMORY_BUSY,
            [],
            f"bulk requests in progress hold this worker's memory budget; a {size}-byte body waited "
            f"{self.budget.wait_s:g} s (CROP_YIELD_MEMORY_WAIT); retry after the Retry-After seconds",
        )

    async def _take_slot(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not self.slots.take():
            busy = self.slots.in_flight
            log.info("answered 429: %d requests in progress", busy, extra={"status": 429})
            await send_error(
                send,
                scope,
                errors.TOO_MANY_REQUESTS,
                [],
                f"{busy} requests are in progress (CROP_YIELD_MAX_CONCURRENCY); "
                "retry after the Retry-After seconds",
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.give_back()

    async def _too_large(self, send: Send, scope: Scope) -> None:
        await send_error(
            send,
            scope,
            errors.TOO_LARGE,
            ["body"],
            f"request bodies are limited to {self.limits.max_bytes} bytes (CROP_YIELD_MAX_BODY_BYTES); "
            "split the rows into several requests",
        )
