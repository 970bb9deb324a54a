"""The request being handled, as context variables: set by each front end's outermost layer
(``service.http.traffic`` for HTTP), read by the log filter (``service.observability.logs``)."""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("crop_yield_request_id", default=None)
ROUTE: ContextVar[str | None] = ContextVar("crop_yield_route", default=None)
