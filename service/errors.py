"""The one table of errors the service answers itself: status, error type, OpenAPI wording,
headers, and which operations can answer it.

The guards (``service.traffic``, ``service.middleware``), the batching overload answer and
the V2 routes answer with these entries, and ``service.openapi`` documents every entry on
every operation it applies to, so an error cannot be answered without being documented.
(BentoML's own 400 for a body that fails validation is the ``INVALID`` entry.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.paths import JSON_API_PATHS, is_probe, is_protected, is_v2

Applies = Callable[[str, str], bool]  # (path, lower-case method) -> bool


def _posts(path: str, method: str) -> bool:
    return method == "post"


def _metered(path: str, method: str) -> bool:
    return not is_probe(path)


def _predictions(path: str, method: str) -> bool:
    return method == "post" and (path in JSON_API_PATHS or is_v2(path))


def _v2_models(path: str, method: str) -> bool:
    return path.startswith("/v2/models/")


def _readiness(path: str, method: str) -> bool:
    return is_v2(path) and path.endswith("/ready")


def _protected(path: str, method: str) -> bool:
    return is_protected(path)


@dataclass(frozen=True)
class ApiError:
    status: int
    error: str
    """Short error type: ``error`` of the JSON body (``detail[].type`` with underscores)."""
    description: str
    """What it means for a caller, in the OpenAPI document."""
    applies: Applies
    retry_after: bool = False
    close: bool = False
    """Close the connection after answering (the request body may be partly unread)."""

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        from service.asgi import RETRY_AFTER

        return (
            *(RETRY_AFTER if self.retry_after else ()),
            *(((b"connection", b"close"),) if self.close else ()),
        )


INVALID = ApiError(
    400,
    "invalid request",
    "Malformed JSON, wrong types, out-of-range values, missing or unknown fields or tensors: "
    "the answer names the field (or tensor) and row (or element)",
    _posts,
)
UNAUTHORIZED = ApiError(401, "unauthorized", "Missing or wrong bearer token", _protected)
NOT_FOUND = ApiError(404, "not found", "No such model or version is served", _v2_models)
REQUEST_TIMEOUT = ApiError(
    408, "request timeout", "The body did not arrive within CROP_YIELD_BODY_TIMEOUT", _posts, close=True
)
TOO_LARGE = ApiError(
    413, "request too large", "Request body larger than CROP_YIELD_MAX_BODY_BYTES", _posts, close=True
)
UNSUPPORTED_MEDIA_TYPE = ApiError(
    415,
    "unsupported media type",
    "Content-Type is not application/json (V2 inference also takes application/octet-stream)",
    _predictions,
)
TOO_MANY_REQUESTS = ApiError(
    429,
    "too many requests",
    "More requests in progress than CROP_YIELD_MAX_CONCURRENCY; retry after Retry-After seconds",
    _metered,
    retry_after=True,
)
OVERLOADED = ApiError(
    503,
    "overloaded",
    "Rows waited longer than CROP_YIELD_MAX_LATENCY_MS in the batching queue (or the model is "
    "still loading); retry after Retry-After seconds",
    _predictions,
    retry_after=True,
)
NOT_READY = ApiError(503, "not ready", "The model is still loading or warming up", _readiness)
TIMEOUT = ApiError(504, "timeout", "Not answered within CROP_YIELD_REQUEST_TIMEOUT", _metered)

TABLE: tuple[ApiError, ...] = (
    INVALID,
    UNAUTHORIZED,
    NOT_FOUND,
    REQUEST_TIMEOUT,
    TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    TOO_MANY_REQUESTS,
    OVERLOADED,
    NOT_READY,
    TIMEOUT,
)
