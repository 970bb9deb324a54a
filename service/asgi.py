"""ASGI plumbing the service's middleware shares: types, header lookup, error answers.

Errors are answered with a JSON body shaped like BentoML's validation errors
(``{"error": ..., "detail": [{"type", "loc", "msg"}]}``), so clients handle one format;
on the Open Inference Protocol's routes, with that protocol's ``{"error": message}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from service.paths import is_v2

if TYPE_CHECKING:
    from service.errors import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

RETRY_AFTER_S = 1
"""Seconds an overloaded service (429, 503) asks clients to wait before retrying."""
RETRY_AFTER: Headers = ((b"retry-after", str(RETRY_AFTER_S).encode()),)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def error_body(path: str, error: str, loc: list[str | int], msg: str) -> bytes:
    """The error document for ``path``: the V2 format on V2 routes, BentoML's elsewhere."""
    if is_v2(path):
        document: dict[str, Any] = {"error": f"{error}: {msg}"}
    else:
        document = {"error": error, "detail": [{"type": error.replace(" ", "_"), "loc": loc, "msg": msg}]}
    return json.dumps(document).encode()


async def send_error(
    send: Send,
    scope: Scope,
    error: ApiError,
    loc: list[str | int],
    msg: str,
    headers: Headers = (),
) -> None:
    """Answer ``error`` (an entry of ``service.errors.TABLE``) with its status and headers."""
    payload = error_body(scope["path"], error.error, loc, msg)
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *error.headers,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
