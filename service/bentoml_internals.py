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


def drop_bentoml_tracing_middleware() -> None:
    """Leave BentoML's OpenTelemetry middleware off the service's middleware stack.

    BentoML 1.4 always installs ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware``
    (``ServiceAppFactory.middlewares``); with every URL excluded it records nothing but still
    costs about 5 µs a request (it rebuilds the URL to match the exclusions), some 3% of a
    single-row /predict; recording, 55-65 µs. Traces are the service's own
    (``service.observability.tracing``), so the middleware is filtered out of the list the
    app factory builds. Idempotent; called where the service is defined.
    """
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    built = ServiceAppFactory.middlewares.fget
    if getattr(built, "untraced", False):
        return

    def middlewares(self: Any) -> list[Any]:
        return [m for m in built(self) if m.cls is not OpenTelemetryMiddleware]

    middlewares.untraced = True  # type: ignore[attr-defined]
    ServiceAppFactory.middlewares = property(middlewares)


__all__ = ["VALIDATION_LOGGER", "CorkDispatcher", "api_input_model", "drop_bentoml_tracing_middleware"]
