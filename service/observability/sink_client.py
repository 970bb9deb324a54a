"""The payload logger's HTTP client: one kept-alive HTTP/1.1 connection per sink, requests
pipelined on it, answers parsed by httptools.

A general client (aiohttp) spent about 130 µs of the worker's CPU on each event, 270 µs on a
busy worker: at 10% sampling a fifth of a single-row call's cost. An event needs much less:
its head is a few known lines, its answer only a status. Here a POST is its head and body
queued for the connection's next write (the body is not copied) and one future that the
parser resolves when the answer is complete; the senders of a sink share the connection, each with one request
in flight, so the pipeline is as deep as the sink has senders, and the requests of
``LINGER_S`` leave in one write. Answers come back in order (HTTP/1.1), so the futures
wait in a FIFO; one timer per client checks the oldest against the timeout.

A connection that breaks (closed, reset, an answer the parser refuses) fails every request
in flight on it with ``"connection"``: the retry policy tries those again on a new one. A
request that times out breaks its connection too: the answers behind it would be late.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

import httptools

Failure = Literal["connection", "timeout"]
LINGER_S = 0.005
"""A request waits this long for others to share its write (and their answers a read): one
event a write cost the worker some 170 µs on a busy machine, mostly the system calls and
event-loop turns of its write and of reading its answer."""


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


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[int | Failure], float]] = deque()
        """Requests in flight, oldest first: their futures and when they were written."""
        self.parser = httptools.HttpResponseParser(self)
        self.open = False
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def send(self, head: bytes, body: bytes) -> asyncio.Future[int | Failure]:
        """Queue one request; the requests of the next ``LINGER_S`` seconds leave in one write."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | Failure] = loop.create_future()
        self.waiting.append((future, loop.time()))
        if not self._unsent:
            loop.call_later(LINGER_S, self._flush)
        self._unsent += (head, body)
        return future

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.open and self.transport is not None:
            self.transport.writelines(unsent)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:  # httptools' callback: one answer read
        if self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():  # "Connection: close": nothing more goes on it
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_result("connection")

    def expire(self, now: float, timeout: float) -> None:
        """The oldest request past ``timeout`` answers "timeout" and breaks the connection
        (the answers behind it would be as late): the rest answer "connection"."""
        if self.waiting and now - self.waiting[0][1] > timeout:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_result("timeout")
            self.close()

    def close(self) -> None:
        self.open = False  # at once: connection_lost comes on the loop's next turn
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails what is in flight


class SinkClient:
    """POSTs to one sink URL; ``post`` answers the status, ``"connection"`` or ``"timeout"``."""

    def __init__(self, url: str, timeout: float) -> None:
        self.target = Target.of(url)
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._watch: asyncio.Task[None] | None = None
        self._tls = ssl.create_default_context() if self.target.tls else None

    async def post(self, headers: dict[str, str], body: bytes) -> int | Failure:
        connection = self._connection
        if connection is None or not connection.open:
            try:
                connection = await self._connect()
            except (OSError, TimeoutError):
                return "connection"
        lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
        head = f"{self.target.head}Content-Length: {len(body)}\r\n{''.join(lines)}\r\n".encode("latin-1")
        return await connection.send(head, body)

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # the senders waiting here share the one new connection
            connection = self._connection
            if connection is not None and connection.open:
                return connection
            loop = asyncio.get_running_loop()
            target = self.target
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    target.host,
                    target.port,
                    ssl=self._tls,
                    server_hostname=target.host if self._tls else None,
                ),
                self.timeout,
            )
            self._connection = protocol
            if self._watch is None:
                self._watch = loop.create_task(self._watch_timeouts())
            return protocol

    async def _watch_timeouts(self) -> None:
        """One timer for every request: a per-request timeout (``asyncio.wait_for``) cost
        more than writing the request."""
        every = min(self.timeout / 4, 0.25)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            if self._connection is not None:
                self._connection.expire(loop.time(), self.timeout)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
