"""ASGI middleware in front of the prediction endpoints.

BentoML 1.4 picks a body parser from the Content-Type header: a multipart type without
a valid body makes it answer 500, and anything unknown is parsed as JSON anyway. The API
only speaks JSON, so any other declared type is refused up front with 415 and a body
shaped like BentoML's validation errors.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = frozenset({"application/json", ""})


class JsonOnly:
    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            header = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            media_type = header.split(";", 1)[0].strip().lower()
            if media_type not in JSON_TYPES:
                await _reject(send, header)
                return
        await self.app(scope, receive, send)


async def _reject(send: Send, header: str) -> None:
    body = json.dumps(
        {
            "error": "unsupported media type",
            "detail": [
                {
                    "type": "unsupported_media_type",
                    "loc": ["header", "content-type"],
                    "msg": f"send a JSON body with Content-Type: application/json, not {header!r}",
                }
            ],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 415,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
