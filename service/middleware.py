"""ASGI middleware in front of the BentoML app: authentication, media type, unroutable V2
paths, the OpenAPI document's corrections and the docs page (traffic control lives in
``service.traffic``).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from service import errors
from service.asgi import ASGIApp, Message, Receive, Scope, Send, header, send_error
from service.paths import is_v2

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


class PatchedOpenAPI:
    """Serve ``GET /docs.json`` through ``patch`` (see ``service.openapi``)."""

    def __init__(self, app: ASGIApp, patch: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.app = app
        self.patch = patch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200:
            body = json.dumps(self.patch(json.loads(body))).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": body})


class DocsPage:
    """Serve ``GET /`` with ``page`` (see ``service.api_document.docs_page``).

    BentoML's own index page loads Google Tag Manager and links to BentoML's sites, and its
    stylesheet hides the document's title; this page is Swagger UI alone.
    """

    def __init__(self, app: ASGIApp, page: Callable[[], bytes]) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = self.page()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
