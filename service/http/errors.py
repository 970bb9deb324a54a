"""The one table of errors the service answers itself (status, error type, OpenAPI wording,
headers, which operations can answer it) and the one builder of their bodies.

The guards (``service.http.guards``, ``service.http.traffic``), the front ends and the
OpenAPI patch (``service.docs.openapi``) all read this table, so an error cannot be answered
without being documented. (BentoML's own 400 for a body that fails validation is the
``INVALID`` entry.) Bodies come in two formats, by path: the JSON API's
``{"error": type, "detail": [{"type", "loc", "msg"}]}`` (shaped like BentoML's validation
errors, so clients handle one format) and the Open Inference Protocol's
``{"error": "type: message"}``.

The data plane's refusals (``service.inference.errors``) name their entry by ``kind``, which
is the entry's ``error``; ``by_kind`` finds it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import Response

from service.http.asgi import Headers, Scope, Send
from service.http.paths import FEEDBACK_PATH, JSON_API_PATHS, is_probe, is_protected, is_v2
from service.settings import MODEL_VERSION_HEADER, RETRY_AFTER_S

Applies = Callable[[str, str], bool]  # (path, lower-case method) -> bool
log = logging.getLogger("crop_yield.errors")


def _posts(path: str, method: str) -> bool:
    return method == "post"


def _metered(path: str, method: str) -> bool:
    return not is_probe(path)


def _predictions(path: str, method: str) -> bool:
    return method == "post" and (path in JSON_API_PATHS or is_v2(path))


def _batched(path: str, method: str) -> bool:
    """The prediction routes: not /feedback, which calls the model directly."""
    return _predictions(path, method) and path != FEEDBACK_PATH


def _v2_models(path: str, method: str) -> bool:
    return path.startswith(("/v2/models/", "/v2/repository/models/"))


def _versions_named(path: str, method: str) -> bool:
    """The V2 model routes, and /feedback, whose body may name a model version."""
    return _v2_models(path, method) or path == FEEDBACK_PATH


def _repository_changes(path: str, method: str) -> bool:
    return path.startswith("/v2/repository/models/")


def _loading(path: str, method: str) -> bool:
    return _predictions(path, method) or _v2_models(path, method) or path in ("/metadata", "/v2/health/ready")


def _never(path: str, method: str) -> bool:
    return False  # answered for methods no operation has, so no operation documents it


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
    def headers(self) -> Headers:
        return (
            *(((b"retry-after", str(RETRY_AFTER_S).encode()),) if self.retry_after else ()),
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
NOT_FOUND = ApiError(404, "not found", "No such model or version is served", _versions_named)
METHOD_NOT_ALLOWED = ApiError(
    405, "method not allowed", "No operation of this path takes this method", _never
)
REQUEST_TIMEOUT = ApiError(
    408,
    "request timeout",
    "The body stalled (no bytes for CROP_YIELD_BODY_TIMEOUT seconds) or arrived slower than "
    "CROP_YIELD_BODY_MIN_RATE",
    _posts,
    close=True,
)
CONFLICT = ApiError(
    409,
    "conflict",
    "The served set cannot change this way: model control is not explicit (CROP_YIELD_MODEL_CONTROL), "
    "the served-set file is read-only, or the version is the default",
    _repository_changes,
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
    "Rows waited longer than CROP_YIELD_MAX_LATENCY_MS in the batching queue; retry after "
    "Retry-After seconds",
    _batched,
    retry_after=True,
)
MEMORY_BUSY = ApiError(
    503,
    "memory busy",
    "Bulk requests in progress hold this worker's memory budget (drawn from the container's "
    "memory limit) and this one waited CROP_YIELD_MEMORY_WAIT seconds for it; retry after "
    "Retry-After seconds",
    _posts,
    retry_after=True,
)
NOT_READY = ApiError(
    503,
    "not ready",
    "The model is still loading or warming up; retry after Retry-After seconds",
    _loading,
    retry_after=True,
)
TIMEOUT = ApiError(504, "timeout", "Not answered within CROP_YIELD_REQUEST_TIMEOUT", _metered)
CLIENT_CLOSED = ApiError(
    499,
    "client closed request",
    "The client went away before the answer (nginx's 499): no client reads it, request metrics count it",
    _never,
)

TABLE: tuple[ApiError, ...] = (
    INVALID,
    UNAUTHORIZED,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    CONFLICT,
    TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    TOO_MANY_REQUESTS,
    OVERLOADED,
    MEMORY_BUSY,
    NOT_READY,
    TIMEOUT,
    CLIENT_CLOSED,
)


def by_kind(kind: str) -> ApiError:
    """The entry whose ``error`` is ``kind`` (a data-plane refusal's kind)."""
    return _BY_KIND[kind]


_BY_KIND = {error.error: error for error in TABLE}


def error_document(path: str, error: ApiError, loc: Sequence[str | int], msg: str) -> bytes:
    """The body answering ``error`` on ``path``: the V2 format on V2 routes, the JSON API's elsewhere."""
    if is_v2(path):
        document: dict[str, Any] = {"error": f"{error.error}: {msg}"}
    else:
        kind = error.error.replace(" ", "_")
        document = {"error": error.error, "detail": [{"type": kind, "loc": list(loc), "msg": msg}]}
    return json.dumps(document).encode()


def error_answer(
    path: str, error: ApiError, loc: Sequence[str | int], msg: str, headers: Headers = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of the answer: every error response is built here."""
    body = error_document(path, error, loc, msg)
    return (
        error.status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *error.headers,
            *headers,
        ],
        body,
    )


async def send_error(
    send: Send, scope: Scope, error: ApiError, loc: Sequence[str | int], msg: str, headers: Headers = ()
) -> None:
    """Answer ``error`` from ASGI middleware."""
    status, all_headers, body = error_answer(scope["path"], error, loc, msg, headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def error_response(
    path: str, error: ApiError, loc: Sequence[str | int], msg: str, headers: Headers = ()
) -> Response:
    """Answer ``error`` from a route (a ready Starlette ``Response``)."""
    status, all_headers, body = error_answer(path, error, loc, msg, headers)
    response = Response(body, status_code=status)
    response.raw_headers = all_headers
    return response


class Refusal(Protocol):
    """A data-plane refusal (``service.inference.errors.DataPlaneError``): its kind names a
    table entry, its field the request field at fault."""

    @property
    def kind(self) -> str: ...

    @property
    def field(self) -> str | None: ...

    @property
    def version(self) -> str | None: ...


def refusal_response(path: str, refusal: Refusal, loc: Sequence[str | int] = ()) -> Response:
    """Answer a data-plane refusal; 5xx ones (normal under load) are logged as one INFO line.
    A refusal of a call already given to a model version names it in ``X-Model-Version``,
    as an answer would (request metrics count it under that version)."""
    error = by_kind(refusal.kind)
    message = str(refusal) + ("; retry after the Retry-After seconds" if error.retry_after else "")
    if error.status >= 500:
        log.info("answered %d: %s", error.status, refusal, extra={"status": error.status})
    named = () if refusal.version is None else ((MODEL_VERSION_HEADER.encode(), refusal.version.encode()),)
    return error_response(path, error, [refusal.field] if refusal.field else loc, message, named)
