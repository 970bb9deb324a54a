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
response it can see, errors included; BentoML's own request timeout is kept only as a
backstop a few seconds behind this one (its 504 would carry no request id).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.http import errors
from service.http.asgi import ASGIApp, Message, Receive, Scope, Send, header
from service.http.errors import send_error
from service.observability.context import REQUEST_ID, ROUTE

if TYPE_CHECKING:  # the worker's admission objects are handed in (service.inference.admission)
    from service.inference.admission import MemoryBudget, Slots

SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A client's X-Request-ID is kept when it is 1 to 128 printable ASCII characters, no spaces."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

log = logging.getLogger("crop_yield.traffic")


class RequestContext:
    """``X-Request-ID`` in and out, and the request deadline (504).

    The id is the client's when sane, else a new one; it is set in a context variable
    (``service.observability.context``, read by the log filter) and added to the response headers.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        request_id = given if given is not None and SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        REQUEST_ID.set(request_id)
        ROUTE.set(scope["path"])
        id_header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await self.app(scope, receive, send_with_id)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning("answered 504: not done within %s s", self.timeout, extra={"status": 504})
            if not started:
                await send_error(
                    send_with_id,
                    scope,
                    errors.TIMEOUT,
                    [],
                    f"not answered within {self.timeout:g} s (CROP_YIELD_REQUEST_TIMEOUT)",
                )


class _TooLargeError(Exception):
    pass


class _TooSlowError(Exception):
    pass


class RequestGate:
    """Receive the whole body first (at most ``max_bytes``), then take one of the worker's
    ``slots`` (shared with gRPC, ``service.inference.admission``) for the rest of the request.

    How slow a body may be is measured as the standard defences do (nginx's
    ``client_body_timeout``, Apache's ``mod_reqtimeout``), not as one deadline for the whole
    body, which refused well-behaved clients whose large uploads took long because the
    server was busy: no bytes for ``body_timeout`` s (inactivity), or, once ``rate_grace``
    s have passed, an average below ``min_rate`` bytes/s (0: no minimum). Either is 408
    with the connection closed; 413 for a body too large, 429 with Retry-After when every
    slot is taken. Paths where ``exempt(path)`` (probes, metrics) take no slot. One event
    loop per worker, so a plain counter is the semaphore.

    Bulk bodies also reserve their memory cost from ``budget`` (``service.inference.admission``)
    before they are read (when Content-Length says their size; after, for chunked ones):
    503 with Retry-After when the budget stays taken.
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
    ) -> None:
        self.app = app
        self.budget = budget
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.min_rate = min_rate
        self.rate_grace = rate_grace
        self.slots = slots
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reserved = 0
        try:
            if scope["method"] in BODY_METHODS:
                declared = header(scope, b"content-length")
                if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
                    await self._too_large(send, scope)
                    return
                if declared is not None and (reserved := await self._reserve(scope, send, int(declared))) < 0:
                    return
                body = await self._receive_body(scope, receive, send)
                if body is None:  # answered (408, 413) or the client disconnected
                    return
                if declared is None and (reserved := await self._reserve(scope, send, len(body))) < 0:
                    return
                receive = _replay(body, receive)
            await self._take_slot(scope, receive, send)
        finally:
            if reserved > 0:
                assert self.budget is not None
                self.budget.release(reserved)

    async def _reserve(self, scope: Scope, send: Send, size: int) -> int:
        """The memory cost reserved for a body of ``size`` bytes (0: not budgeted); -1 when
        refused (answered 503)."""
        if self.budget is None or not (cost := self.budget.cost_of(size)):
            return 0
        if await self.budget.reserve(cost):
            return cost
        log.info("answered 503: no memory budget for a %d-byte body", size, extra={"status": 503})
        await send_error(
            send,
            scope,
            errors.MEMORY_BUSY,
            [],
            f"bulk requests in progress hold this worker's memory budget; a {size}-byte body waited "
            f"{self.budget.wait_s:g} s (CROP_YIELD_MEMORY_WAIT); retry after the Retry-After seconds",
        )
        return -1

    async def _receive_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        try:
            return await self._read_body(receive)
        except _TooSlowError as exc:
            log.info("answered 408: %s", exc, extra={"status": 408})
            await send_error(send, scope, errors.REQUEST_TIMEOUT, ["body"], str(exc))
        except _TooLargeError:
            await self._too_large(send, scope)
        return None

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

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        started = asyncio.get_running_loop().time()
        while True:
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                raise _TooSlowError(
                    f"no bytes of the request body arrived for {self.body_timeout:g} s "
                    "(CROP_YIELD_BODY_TIMEOUT)"
                ) from None
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLargeError
            chunks.append(chunk)
            if self.min_rate and message.get("more_body", False):
                self._check_rate(size, asyncio.get_running_loop().time() - started)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _check_rate(self, size: int, elapsed: float) -> None:
        if elapsed > self.rate_grace and size < self.min_rate * elapsed:
            raise _TooSlowError(
                f"the request body arrives at {size / elapsed:,.0f} bytes/s, below "
                f"{self.min_rate:g} bytes/s (CROP_YIELD_BODY_MIN_RATE) after {self.rate_grace:g} s"
            )

    async def _too_large(self, send: Send, scope: Scope) -> None:
        await send_error(
            send,
            scope,
            errors.TOO_LARGE,
            ["body"],
            f"request bodies are limited to {self.max_bytes} bytes (CROP_YIELD_MAX_BODY_BYTES); "
            "split the rows into several requests",
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read body, then defers to the server."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
