"""Around every inference RPC: its request id (``x-request-id`` metadata, as ``X-Request-ID``
is for HTTP) and method in the log context, a deadline (CROP_YIELD_REQUEST_TIMEOUT:
answered DEADLINE_EXCEEDED), and the call counted and timed by method and status code
(``crop_yield_grpc_requests_total``, ``crop_yield_grpc_request_duration_seconds``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc

from service.grpc.calls import Behaviour
from service.observability import metrics
from service.observability.context import REQUEST_ID, ROUTE

SANE_ID_LENGTH = 128


def observed(behaviour: Behaviour, service: str, method: str, timeout: float) -> Behaviour:
    route = f"/{service}/{method}"
    duration = metrics.grpc_request_duration().labels(method=method)
    counted = metrics.grpc_requests_total()
    answered_ok = counted.labels(method=method, code="OK")

    async def observe(request: Any, context: grpc.aio.ServicerContext) -> Any:
        given = _metadata(context, "x-request-id")
        sane = given is not None and 0 < len(given) <= SANE_ID_LENGTH and given.isprintable()
        REQUEST_ID.set(given if sane and given is not None else uuid.uuid4().hex)
        ROUTE.set(route)
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            async with asyncio.timeout(timeout):
                answer = await behaviour(request, context)
            code = context.code() or grpc.StatusCode.OK
            return answer
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, f"not answered within {timeout:g} s (CROP_YIELD_REQUEST_TIMEOUT)")
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            if code is grpc.StatusCode.OK:
                answered_ok.inc()
            else:
                counted.labels(method=method, code=_name(code)).inc()
            duration.observe(time.perf_counter() - started)

    return observe


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return str(value)
    return None


def _name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
