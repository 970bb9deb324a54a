"""Guards in front of the routes: authentication, media type, unroutable V2 paths (traffic
control lives in ``service.http.traffic``)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from service.http import errors
from service.http.asgi import ASGIApp, Receive, Scope, Send, header
from service.http.errors import send_error
from service.http.paths import is_v2

JSON_TYPES = frozenset({"application/json", ""})


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` where ``protects(path)`` (probes and metrics stay open).

    The comparison is constant-time (``hmac.compare_digest``) so response timing does not
    reveal how much of a guessed token was right.
    """

    def __init__(self, app: ASGIApp, token: str, protects: Callable[[str], bool]) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.protects = protects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.protects(scope["path"]):
            given = (header(scope, b"authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self.expected):
                await send_error(
                    send,
                    scope,
                    errors.UNAUTHORIZED,
                    ["header", "authorization"],
                    "send the service token as 'Authorization: Bearer <token>'",
                    ((b"www-authenticate", b'Bearer realm="crop-yield"'),),
                )
                return
        await self.app(scope, receive, send)


class UnroutableV2Paths:
    """Answer a ``/v2`` path holding a newline with the protocol's 404.

    The V2 routes live in a mounted app, and Starlette's mount pattern does not match a
    newline, so such a path (a fuzzer sends them) would get BentoML's plain-text 404.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\n" in scope["path"] and is_v2(scope["path"]):
            await send_error(send, scope, errors.NOT_FOUND, ["path"], "no such route or model")
            return
        await self.app(scope, receive, send)


class JsonOnly:
    """Refuse non-JSON bodies on ``paths`` with 415.

    BentoML 1.4 picks a body parser from the Content-Type header: a multipart type makes
    it answer 500 and anything unknown is parsed as JSON anyway. The API only speaks JSON.
    """

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            content_type = header(scope, b"content-type") or ""
            if content_type.split(";", 1)[0].strip().lower() not in JSON_TYPES:
                await send_error(
                    send,
                    scope,
                    errors.UNSUPPORTED_MEDIA_TYPE,
                    ["header", "content-type"],
                    f"send a JSON body with Content-Type: application/json, not {content_type!r}",
                )
                return
        await self.app(scope, receive, send)
