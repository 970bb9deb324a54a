"""The one place that touches BentoML's private modules and names.

``bentoml==1.4.39`` is pinned exactly, and ``tests/unit/service/test_bentoml_internals.py``
pins the behaviour relied on here, so that a BentoML upgrade that changes any of it fails in
that one test file, naming what moved. Everything else in ``contract``, ``training`` and
``service`` uses BentoML's public API or its environment variables.
"""

from __future__ import annotations

from typing import Any

# The adaptive batching dispatcher behind ``@bentoml.api(batchable=True)``. The public way
# to reach it from another endpoint is ``self.to_async.<method>``: in 1.4 that is an
# in-process HTTP round trip per call whose client session is recycled every 100 calls,
# which broke calls in flight under sustained load (docs/bentoml-1.4.md). Awaiting the
# dispatcher directly keeps the same algorithm without the hop; no public API exposes it.
from bentoml._internal.marshal.dispatcher import CorkDispatcher

# BentoML logs every rejected request body as an ERROR with a traceback on this logger
# (``log_exception`` in the module of that name). No setting changes that, so
# ``service.observability.runtime.QuietValidationErrors`` filters that logger by name.
VALIDATION_LOGGER = "bentoml._internal.server.http_app"


def api_input_model(service: Any, name: str) -> Any:
    """The pydantic model BentoML validates the body of API ``name`` with (the service's
    ``input_spec`` wrapped in BentoML's IO descriptor). The hot routes validate with it, so
    a rejected body is answered exactly as BentoML's API layer would (``Service.apis`` and
    ``APIMethod.input_spec`` are attributes of the SDK's classes, not documented API)."""
    return service.apis[name].input_spec


def drop_bentoml_middleware() -> None:
    """Leave BentoML's OpenTelemetry and timeout middleware off the service's middleware stack.

    BentoML 1.4 always installs ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware``
    (``ServiceAppFactory.middlewares``); with every URL excluded it records nothing but still
    costs about 5 µs a request (it rebuilds the URL to match the exclusions), some 3% of a
    single-row /predict; recording, 55-65 µs. Traces are the service's own
    (``service.observability.tracing``).

    Its ``TimeoutMiddleware`` (``traffic.timeout`` must be positive, so it cannot be switched
    off) runs every request in a task of its own beside a future and a timer it never
    cancels: at 7,000 requests a second some 245,000 timers wait on the loop at any time, and
    a single-row request paid about 3.5% of the worker's samples in its frames. The request
    deadline is the service's own (``service.http.traffic.RequestContext``, outermost of its
    middleware, on every HTTP request), so the middleware is left out too.

    Both are filtered out of the list the app factory builds. Idempotent; called where the
    service is defined.
    """
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    built = ServiceAppFactory.middlewares.fget
    if getattr(built, "filtered", False):
        return
    dropped = (OpenTelemetryMiddleware, TimeoutMiddleware)

    def middlewares(self: Any) -> list[Any]:
        return [m for m in built(self) if m.cls not in dropped]

    middlewares.filtered = True  # type: ignore[attr-defined]
    ServiceAppFactory.middlewares = property(middlewares)


__all__ = ["VALIDATION_LOGGER", "CorkDispatcher", "api_input_model", "drop_bentoml_middleware"]
