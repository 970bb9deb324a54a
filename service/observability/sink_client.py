"""The payload logger's HTTP/1.1 connection to a sink: requests written in batches on one
kept-alive connection (pipelined), answers parsed by httptools and matched to their
requests in order.

A general client (aiohttp) spent about 130 µs of the worker's CPU on each event, 270 µs on
a busy worker, and a coroutine and a future per event still cost some 90 µs at 10%
sampling, mostly event-loop turns: a task woken to send, the write's system call, a task
woken by the answer. Here nothing waits per event: ``Pipeline.write`` writes a batch of
requests (head and body each, bodies not copied) in one system call, and each answer the
parser completes calls ``answered(token, status)`` directly, from ``data_received``.

A connection that breaks (closed, reset, an answer the parser refuses) answers every
request in flight on it ``"connection"``: the retry policy tries those again on a new one.
A request that times out breaks its connection too: the answers behind it would be late.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import httptools

Failure = Literal["connection", "timeout"]
Answer = int | Failure
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where a sink URL's POSTs go, and the fixed lines of their heads."""

    host: str
    port: int
    tls: bool
    head: str
    """``POST <path> HTTP/1.1``, ``Host`` and ``Authorization`` (from user:password in the
    URL), each with its CRLF."""

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a sink URL is http:// or https:// with a host: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]
        head = f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\n"
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            head += f"Authorization: Basic {base64.b64encode(user.encode()).decode()}\r\n"
        return cls(parts.hostname, port, tls, head)

    def request_head(self, headers: dict[str, str], length: int) -> bytes:
        """A POST's head: the fixed lines, ``Content-Length`` and ``headers``."""
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        return f"{self.head}Content-Length: {length}\r\n{lines}\r\n".encode("latin-1")


class Pipeline(asyncio.Protocol, Generic[T]):
    """One connection to a sink. ``write`` sends requests, each named by a token; the
    answer to each comes back as ``answered(token, status | "connection" | "timeout")``."""

    def __init__(self, answered: Callable[[T, Answer], None]) -> None:
        self.answered = answered
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[T, float]] = deque()
        """Requests in flight, oldest first: their tokens and when they were written."""
        self.parser = httptools.HttpResponseParser(self)
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def write(self, requests: Sequence[tuple[T, bytes, bytes]]) -> None:
        """Send (token, head, body) requests in one write."""
        assert self.transport is not None
        now = asyncio.get_running_loop().time()
        parts: list[bytes] = []
        for token, head, body in requests:
            self.waiting.append((token, now))
            parts += (head, body)
        self.transport.writelines(parts)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:  # httptools' callback: one answer read
        if self.waiting:
            token, _ = self.waiting.popleft()
            self.answered(token, self.parser.get_status_code())
        if not self.parser.should_keep_alive():  # "Connection: close": nothing more goes on it
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiting, self.waiting = self.waiting, deque()
        for token, _ in waiting:
            self.answered(token, "connection")

    def expire(self, now: float, timeout: float) -> None:
        """The oldest request past ``timeout`` answers "timeout" and breaks the connection
        (the answers behind it would be as late): the rest answer "connection"."""
        if self.waiting and now - self.waiting[0][1] > timeout:
            token, _ = self.waiting.popleft()
            self.answered(token, "timeout")
            self.close()

    def close(self) -> None:
        self.open = False  # at once: connection_lost comes on the loop's next turn
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails what is in flight


async def connect(
    target: Target, answered: Callable[[T, Answer], None], timeout: float, tls: ssl.SSLContext | None
) -> Pipeline[T]:
    """A new connection to ``target``; OSError or TimeoutError when there is none."""
    loop = asyncio.get_running_loop()
    _, pipeline = await asyncio.wait_for(
        loop.create_connection(
            lambda: Pipeline(answered),
            target.host,
            target.port,
            ssl=tls,
            server_hostname=target.host if tls else None,
        ),
        timeout,
    )
    return pipeline
