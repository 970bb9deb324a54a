"""ASGI middleware in front of the BentoML app: authentication, body size, media type,
and the OpenAPI document's corrections.

Each guard answers with a JSON body shaped like BentoML's validation errors
(``{"error": ..., "detail": [{"type", "loc", "msg"}]}``), so clients handle one format;
on the Open Inference Protocol's routes, with that protocol's ``{"error": message}``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.paths import is_v2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = frozenset({"application/json", ""})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def send_error(
    send: Send,
    scope: Scope,
    status: int,
    error: str,
    loc: list[str],
    msg: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    if is_v2(scope["path"]):
        document: dict[str, Any] = {"error": f"{error}: {msg}"}
    else:
        document = {"error": error, "detail": [{"type": error.replace(" ", "_"), "loc": loc, "msg": msg}]}
    payload = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


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
            given = (_header(scope, b"authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self.expected):
                await send_error(
                    send,
                    scope,
                    401,
                    "unauthorized",
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
            await send_error(send, scope, 404, "not found", ["path"], "no such route or model")
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
            header = _header(scope, b"content-type") or ""
            if header.split(";", 1)[0].strip().lower() not in JSON_TYPES:
                await send_error(
                    send,
                    scope,
                    415,
                    "unsupported media type",
                    ["header", "content-type"],
                    f"send a JSON body with Content-Type: application/json, not {header!r}",
                )
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before parsing any of it.

    A declared Content-Length is checked up front; a body without one (chunked) is read
    here up to the limit and replayed to the app, so an oversized stream is cut off early.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._reject(send, scope)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(send, scope)
                return
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _reject(self, send: Send, scope: Scope) -> None:
        await send_error(
            send,
            scope,
            413,
            "request too large",
            ["body"],
            f"request bodies are limited to {self.max_bytes} bytes (CROP_YIELD_MAX_BODY_BYTES); "
            "split the rows into several requests",
        )


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
