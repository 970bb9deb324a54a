"""What every RPC of the inference service passes through, composed once per method when the
server is built (``service.grpc.server``), not per call as grpcio's interceptors are (two
of those cost a fifth of single-row throughput: docs/architecture.md). Outermost first:

- ``observed``: the request id (``x-request-id`` metadata, as ``X-Request-ID`` is for HTTP)
  and route in the log context, the request deadline (CROP_YIELD_REQUEST_TIMEOUT: answered
  DEADLINE_EXCEEDED), and the call counted by method and status code
  (``crop_yield_grpc_requests_total``) and timed by method and the model version that
  answered (``crop_yield_grpc_request_duration_seconds``),
  abandoned calls included: a call its client cancels, or whose client deadline passes,
  is counted CANCELLED or DEADLINE_EXCEEDED, as the client sees it;
- ``authenticated``: the bearer token, when one is set (UNAUTHENTICATED);
- ``well_formed``: a message protobuf could not read (``service.grpc.wire``: the
  deserializer hands it over as ``Malformed``) is INVALID_ARGUMENT, saying what is wrong;
- ``admitted``: a slot from the worker's slots, shared with HTTP, and for a message of at
  least 1 MiB its memory cost from the worker's budget (``service.inference.admission``).
  The size is the message's length on the wire, handed over by the deserializer
  (``sized``): asking protobuf (``ByteSize``) re-serializes the whole message.

The probe RPCs (``OPEN``: liveness, readiness, server metadata), like their HTTP twins,
take no token and no slot, so load balancers and probes that use the protocol's own calls
keep working with authentication on and at full load. Refusals for load are
RESOURCE_EXHAUSTED with ``grpc-retry-pushback-ms`` trailing metadata, which gRPC's retry
policy reads as HTTP clients read Retry-After.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import grpc

from service.grpc.wire import Malformed
from service.inference.admission import MemoryBudget, Slots
from service.observability import context as request_context
from service.observability import deferred, metrics
from service.observability.statistics import STATISTICS
from service.observability.tracing import Tracer
from service.settings import RETRY_AFTER_S

log = logging.getLogger("crop_yield.grpc")
Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
OPEN = frozenset({"ServerLive", "ServerReady", "ModelReady", "ServerMetadata"})
"""The probe RPCs: no token, no slot (HTTP: ``service.http.paths``, checked alike by a test)."""
RETRY_PUSHBACK = (("grpc-retry-pushback-ms", str(RETRY_AFTER_S * 1000)),)


class Sized(NamedTuple):
    """A request message and its length on the wire (what ``admitted`` budgets by)."""

    message: Any
    nbytes: int


def sized(parse: Callable[[bytes], Any]) -> Callable[[bytes], Sized]:
    """A request deserializer that keeps the message's length."""

    def read(data: bytes) -> Sized:
        return Sized(parse(data), len(data))

    return read


def metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """The value of invocation metadata ``key`` (lower case), or None."""
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return str(value)
    return None


def observed(
    behaviour: Behaviour,
    route: str,
    method: str,
    timeout: float,
    sticky_header: str = "x-request-id",
    tracer: Tracer | None = None,
    prediction: bool = False,
) -> Behaviour:
    """Timed by method and by the model version that answered: the answer's ``model_version``
    when it has one (ModelInferResponse), else "" (no answer, or an RPC without versions).
    ``sticky_header``: the metadata canary weights hash (``context.ROUTING_KEY``) when a call
    has it; the request id otherwise. ``tracer``: the ``traceparent`` metadata in, a
    ``traceresponse`` trailer out, and the spans of sampled calls. ``prediction``: the call
    counts in Triton's statistics (``service.observability.statistics``)."""
    sticky = None if sticky_header == "x-request-id" else sticky_header
    timed = metrics.grpc_request_duration()
    # bound once per version and code seen; written once a second (observability.deferred)
    durations = {"": deferred.Histogram(timed.labels(method=method, version=""))}
    counted = metrics.grpc_requests_total()
    answered_ok = deferred.Counter(counted.labels(method=method, code="OK"))
    codes: dict[str, deferred.Counter] = {}

    def duration_of(version: str) -> Any:
        if version not in durations and len(durations) >= metrics.MAX_VERSIONS:
            version = metrics.OTHER_VERSION  # versions come from answers, but stay bounded
        if version not in durations:
            durations[version] = deferred.Histogram(timed.labels(method=method, version=version))
        return durations[version]

    def code_count(code: str) -> deferred.Counter:
        counter = codes.get(code)
        if counter is None:  # status codes are a fixed set: bounded
            counter = codes[code] = deferred.Counter(counted.labels(method=method, code=code))
        return counter

    async def observe(request: Any, context: grpc.aio.ServicerContext) -> Any:
        key = None if sticky is None else metadata(context, sticky)
        request_id = request_context.begin(metadata(context, "x-request-id"), route, key)
        trace = None
        if tracer is not None:
            trace = tracer.begin(metadata(context, "traceparent"))
            if trace is not None:
                if trace.sampled:
                    attributes = {
                        "rpc.system": "grpc",
                        "rpc.method": method,
                        "crop_yield.request_id": request_id,
                    }
                    tracer.open(trace, route.lstrip("/"), attributes)
                context.set_trailing_metadata((("traceresponse", trace.traceresponse()),))
        call = STATISTICS.begin() if prediction else None
        started = time.perf_counter()
        code: Any = grpc.StatusCode.UNKNOWN
        version = ""
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                answer = await behaviour(request, context)
            code = context.code() or grpc.StatusCode.OK
            version = getattr(answer, "model_version", "")
            return answer
        except TimeoutError:
            if not deadline.expired():  # raised inside, not the request deadline
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, request_context.past_deadline(timeout))
        except asyncio.CancelledError:  # grpcio cancels the handler of an abandoned call
            code = abandoned(context)
            raise
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            if call is not None:
                STATISTICS.end(call, code is grpc.StatusCode.OK)
            if code is grpc.StatusCode.OK:
                answered_ok.inc()
            else:
                code_count(_name(code)).inc()
            (durations.get(version) or duration_of(version)).observe(time.perf_counter() - started)
            if trace is not None and trace.span is not None:
                tracer.end(trace, _name(code), code is not grpc.StatusCode.OK)  # type: ignore[union-attr]

    return observe


def abandoned(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The code of a call grpcio cancelled: its client's deadline passed, or it gave up (or the
    server's shutdown grace ran out)."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def authenticated(behaviour: Behaviour, token: str) -> Behaviour:
    """``authorization: Bearer <token>`` metadata required (constant-time compare)."""
    expected = f"Bearer {token}".encode()

    async def check(request: Any, context: grpc.aio.ServicerContext) -> Any:
        sent = metadata(context, "authorization") or ""
        if not hmac.compare_digest(sent.encode(), expected):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)"
            )
        return await behaviour(request, context)

    return check


def well_formed(behaviour: Behaviour) -> Behaviour:
    """INVALID_ARGUMENT for a request the deserializer could not read (before a slot is taken)."""

    async def check(request: Any, context: grpc.aio.ServicerContext) -> Any:
        message = request.message if type(request) is Sized else request
        if type(message) is Malformed:
            log.info("answered INVALID_ARGUMENT: %s", message.problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.problem)
        return await behaviour(request, context)

    return check


def admitted(behaviour: Behaviour, slots: Slots, budget: MemoryBudget, keep_size: bool = False) -> Behaviour:
    """A slot for the call, and memory for a large message (which arrives ``Sized``); with
    ``keep_size``, ``behaviour`` gets it ``Sized`` too (payload logging counts its bytes)."""

    async def admit(received: Sized, context: grpc.aio.ServicerContext) -> Any:
        request, size = received
        cost = budget.cost_of(size)
        if cost and not await budget.reserve(cost):
            await refuse(
                context,
                f"bulk requests in progress hold this worker's memory budget; a {size}-byte "
                f"message waited {budget.wait_s:g} s (CROP_YIELD_MEMORY_WAIT)",
            )
        try:
            if not slots.take():
                await refuse(
                    context, f"{slots.in_flight} requests are in progress (CROP_YIELD_MAX_CONCURRENCY)"
                )
            try:
                return await behaviour(received if keep_size else request, context)
            finally:
                slots.give_back()
        finally:
            if cost:
                budget.release(cost)

    return admit


async def refuse(context: grpc.aio.ServicerContext, message: str) -> None:
    """RESOURCE_EXHAUSTED, asking to retry after the pushback (raises)."""
    message += "; retry after grpc-retry-pushback-ms"
    log.info("answered RESOURCE_EXHAUSTED: %s", message)
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=RETRY_PUSHBACK)
