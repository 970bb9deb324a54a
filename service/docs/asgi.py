"""ASGI middleware serving the API document and the docs page (see ``service.docs.openapi``
and ``service.docs.document``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from service.http.asgi import ASGIApp, Message, Receive, Scope, Send


class PatchedOpenAPI:
    """Serve ``GET /docs.json`` through ``patch`` (see ``service.docs.openapi``)."""

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
    """Serve ``GET /`` with ``page`` (see ``service.docs.document.docs_page``).

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
