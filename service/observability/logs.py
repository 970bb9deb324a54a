"""Log lines that carry the request id, as text (default) or one JSON object per line.

BentoML configures the worker's logging (one stream handler on the root and ``bentoml``
loggers); ``configure`` adds a filter to those handlers that stamps each record with the
request id and route of the request being handled (``service.observability.context``), and
swaps the formatter when ``CROP_YIELD_LOG_FORMAT=json``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from service.observability.context import REQUEST_ID, ROUTE
from service.observability.tracing import TRACE

LogFormat = Literal["text", "json"]
OWN_LOGGER = "crop_yield"


class RequestFields(logging.Filter):
    """Stamp ``request_id``, ``route`` and ``trace_id`` (None outside a request, or for a
    request without trace context) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.route = ROUTE.get()
        trace = TRACE.get()
        record.trace_id = None if trace is None else trace.trace_hex
        return True


class TextFormatter(logging.Formatter):
    """The existing format, with `` [request <id>]`` appended to lines about a request."""

    def __init__(self, base: logging.Formatter) -> None:
        super().__init__()
        self.base = base

    def format(self, record: logging.LogRecord) -> str:
        text = self.base.format(record)
        request_id = getattr(record, "request_id", None)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            return f"{text} [request {request_id} trace {trace_id}]"
        return f"{text} [request {request_id}]" if request_id else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, trace_id, route, status, message."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "trace_id": getattr(record, "trace_id", None),
            "route": getattr(record, "route", None),
            "status": getattr(record, "status", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure(log_format: LogFormat) -> None:
    """Install the filter and formatter on the handlers BentoML set up in this worker."""
    logging.getLogger(OWN_LOGGER).setLevel(logging.INFO)  # propagates to the root's handler
    handlers = {h for name in ("", "bentoml") for h in logging.getLogger(name).handlers}
    for handler in handlers:
        if not any(isinstance(f, RequestFields) for f in handler.filters):
            handler.addFilter(RequestFields())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        elif handler.formatter is not None and not isinstance(handler.formatter, TextFormatter):
            handler.setFormatter(TextFormatter(handler.formatter))
