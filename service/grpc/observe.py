"""Around every gRPC call: its request id (``x-request-id`` metadata, as ``X-Request-ID`` is
for HTTP) and method in the log context, a deadline (CROP_YIELD_REQUEST_TIMEOUT: answered
DEADLINE_EXCEEDED), and the call counted and timed by method and status code
(``crop_yield_grpc_requests_total``, ``crop_yield_grpc_request_duration_seconds``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.observability import metrics
from service.observability.context import REQUEST_ID, ROUTE

SANE_ID_LENGTH = 128


class CallObserver(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:  # streams (health Watch, reflection)
            return handler
        method = details.method.rsplit("/", 1)[-1]
        given = dict(details.invocation_metadata or ()).get("x-request-id")
        behaviour = handler.unary_unary
        duration = metrics.grpc_request_duration().labels(method=method)

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            sane = isinstance(given, str) and 0 < len(given) <= SANE_ID_LENGTH and given.isprintable()
            REQUEST_ID.set(given if sane else uuid.uuid4().hex)
            ROUTE.set(details.method)
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await behaviour(request, context)
                code = context.code() or grpc.StatusCode.OK
                return answer
            except TimeoutError:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(
                    code, f"not answered within {self.timeout:g} s (CROP_YIELD_REQUEST_TIMEOUT)"
                )
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.grpc_requests_total().labels(method=method, code=_name(code)).inc()
                duration.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
