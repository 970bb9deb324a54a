"""Payload logging of the HTTP prediction routes (``service.observability.payloads``).

``PayloadLogging`` sits right inside ``service.http.traffic.RequestGate``, so it sees every
call that got past authentication, the body limits and admission: the body has been read
whole (one bytes object, held here by reference) and the request id is set. It wraps
``send`` to note the status, the response headers and the body parts as sent, for the
prediction routes only (``protocol_of``): ``POST /predict``, ``POST /predict_columns`` and
the V2 infer routes (versioned or not; JSON or binary tensors). Answers of every status are
logged, those of the route (400, 404, 415, 503) as sent; a call cut by the request
deadline as 504 and one whose client went away as 499, with empty response bodies (their
answers are written outside, by ``RequestContext``). Calls refused before their body was
read or admitted (401, 408, 413, 429, a memory 503) carry no payload and are not logged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from service.http.asgi import ASGIApp, Headers, Message, Receive, Scope, Send, read_body
from service.http.bodies import replay
from service.http.paths import JSON_API_PREDICTIONS, is_prediction
from service.http.traffic import DEADLINE
from service.observability import context
from service.observability.payloads import Call, Payload, PayloadLog
from service.settings import MODEL_VERSION_HEADER

JSON_API: Final = "json-api"
"""``ce-protocol`` of ``/predict`` and ``/predict_columns``."""
V2_REST: Final = "v2-rest"
"""``ce-protocol`` of the V2 infer routes over HTTP (JSON or binary tensors)."""
CLIENT_CLOSED = 499

_VERSION: Final = MODEL_VERSION_HEADER.encode()
_HEADER_LENGTH: Final = b"inference-header-content-length"


def protocol_of(path: str) -> str | None:
    """The ``ce-protocol`` of a prediction route's path; None for any other path."""
    if path in JSON_API_PREDICTIONS:
        return JSON_API
    return V2_REST if is_prediction(path) else None


def _find(headers: Headers | list[tuple[bytes, bytes]], *names: bytes) -> dict[bytes, str]:
    found = {}
    for key, value in headers:
        if key in names:
            found[key] = bytes(value).decode("latin-1")
    return found


def _payload(body: bytes, headers: dict[bytes, str], default_type: str) -> Payload:
    size = headers.get(_HEADER_LENGTH)
    header_size = int(size) if size is not None and size.isdigit() else None
    if header_size is not None:  # binary tensors (the V2 routes' default type for them)
        default_type = "application/octet-stream"
    return Payload(body, headers.get(b"content-type") or default_type, header_size)


class HttpCall(Call):
    """A call over HTTP: references to the scope's headers, the body as received, and the
    answer's headers and body parts as sent."""

    __slots__ = ("body", "parts", "request_headers", "response_headers", "status")

    def __init__(
        self,
        protocol: str,
        scope: Scope,
        started: float,
        body: bytes,
        status: int,
        response_headers: Headers | list[tuple[bytes, bytes]],
        parts: list[bytes],
    ) -> None:
        super().__init__(
            protocol,
            scope["path"],
            context.REQUEST_ID.get(),
            started,
            time.time(),
            len(body),
            sum(len(p) for p in parts),
        )
        self.request_headers = scope["headers"]
        self.body = body
        self.status = status
        self.response_headers = response_headers
        self.parts = parts

    def request(self) -> Payload:
        found = _find(self.request_headers, b"content-type", _HEADER_LENGTH)
        return _payload(self.body, found, "application/json")

    def response(self) -> Payload:
        body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        found = _find(self.response_headers, b"content-type", _HEADER_LENGTH)
        return _payload(body, found, "application/json" if body else "application/octet-stream")

    def attributes(self) -> dict[str, str]:
        attributes = {"statuscode": str(self.status)}
        version = _find(self.response_headers, _VERSION).get(_VERSION)
        if version:
            attributes["modelversion"] = version
        trace = _find(self.request_headers, b"traceparent", b"tracestate")
        for name in (b"traceparent", b"tracestate"):
            if name in trace:
                attributes[name.decode()] = trace[name]
        return attributes


class PayloadLogging:
    """Hand each sampled prediction call to ``log`` once it is answered."""

    def __init__(self, app: ASGIApp, log: PayloadLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (protocol := protocol_of(scope["path"])) is None
            or not self.log.keeps(context.REQUEST_ID.get())
        ):
            await self.app(scope, receive, send)
            return
        started = time.time()
        body = await read_body(receive)  # one message: RequestGate has read it whole
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []

        async def noted(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", headers)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay(body, receive), noted)
        except asyncio.CancelledError:
            if not status:  # cut by the request deadline, or the client went away
                deadline = scope.get(DEADLINE)
                late = deadline is not None and asyncio.get_running_loop().time() >= deadline
                status = 504 if late else CLIENT_CLOSED
            raise
        except Exception:
            status = status or 500  # what the server's error handler answers
            raise
        finally:
            self.log.record(HttpCall(protocol, scope, started, body, status, headers, parts))
