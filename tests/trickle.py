"""Trickling clients: connections that declare a large body, then send it a byte at a time.

Each one costs its sender a few bytes a second; what it may cost the server is what the
tests of slow bodies (tests/integration/service/test_slow_bodies.py) and
``benchmarks/slow_bodies_bench.py`` measure. Two kinds, both on raw sockets, so nothing in a
client library paces or buffers them:

- HTTP/1.1: headers with ``Content-Length: declared``, then the body's bytes;
- gRPC: an HTTP/2 stream (``h2``) opening ModelInfer, whose first DATA frame is the 5-byte
  gRPC prefix declaring a ``declared``-byte message, then the message's bytes.

``lead`` bytes are sent at once after the declaration (a client that starts honestly, then
slows to a trickle). One thread sends every connection a byte every ``every_s`` seconds and
reads what the server sends back: any answer, reset or close marks a connection answered.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import h2.events
import h2.exceptions

from tests import grpc_wire

BYTE = b" "
"""What is trickled: whitespace, so a JSON body stays valid for as long as it lasts."""


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setblocking(False)
        self.answered = False
        self.sent = 0

    def write(self, data: bytes) -> None:
        """Send all of ``data`` (small: a declaration, a lead, a byte), or mark the connection
        answered when the server has closed it."""
        if self.answered:
            return
        view = memoryview(data)
        deadline = time.monotonic() + 30
        try:
            while view:
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:  # the server reads no faster: wait for room
                    if time.monotonic() > deadline:
                        raise TimeoutError("the server took no bytes for 30 s") from None
                    time.sleep(0.01)
        except OSError:  # reset or closed: the server has answered in its way
            self.answered = True

    def poll(self) -> None:
        """Read whatever the server has sent, without waiting."""
        while not self.answered:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.answered = True
                return
            if not data:
                self.answered = True
                return
            self.received(data)

    def received(self, data: bytes) -> None:
        self.answered = True  # HTTP/1.1: any byte from the server is an answer

    def trickle(self, data: bytes) -> None:
        self.write(data)
        self.sent += len(data)

    def close(self) -> None:
        self.sock.close()


class _GrpcConnection(_Connection):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.h2 = grpc_wire.client()
        self.stream = self.h2.get_next_available_stream_id()
        self.authority = f"{host}:{port}"

    def open(self, declared: int, lead: bytes) -> None:
        self.h2.send_headers(self.stream, grpc_wire.call_headers(self.authority))
        self.h2.send_data(self.stream, grpc_wire.prefix(declared) + lead)
        self.write(self.h2.data_to_send())

    def received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.answered = True
            return
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated) or (
                isinstance(event, h2.events.ResponseReceived | h2.events.StreamReset | h2.events.StreamEnded)
                and event.stream_id == self.stream
            ):
                self.answered = True
        self.write(self.h2.data_to_send())  # settings and ping acknowledgements, window updates

    def trickle(self, data: bytes) -> None:
        if self.answered:
            return
        self.h2.send_data(self.stream, data)
        self.write(self.h2.data_to_send())
        self.sent += len(data)


class Tricklers:
    """Trickling connections, each sent a byte every ``every_s`` seconds by one thread until
    closed (use as a context manager)."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self.connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)
        self._thread.start()

    def http(
        self,
        url: str,
        path: str,
        declared: int,
        lead: bytes = b"",
        content_type: str = "application/json",
    ) -> None:
        """One HTTP/1.1 request to ``url`` (``http://host:port``) declaring ``declared`` bytes."""
        host, port = url.removeprefix("http://").rsplit(":", 1)
        connection = _Connection(host, int(port))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
        connection.write(head + lead)
        self._add(connection)

    def grpc(self, host: str, port: int, declared: int, lead: bytes = b"") -> None:
        """One ModelInfer call whose message declares ``declared`` bytes."""
        connection = _GrpcConnection(host, port)
        connection.open(declared, lead)
        self._add(connection)

    def _add(self, connection: _Connection) -> None:
        with self._lock:
            self.connections.append(connection)

    @property
    def answered(self) -> list[bool]:
        """Which connections the server has answered, reset or closed so far."""
        with self._lock:
            for connection in self.connections:
                connection.poll()
            return [c.answered for c in self.connections]

    @property
    def sent(self) -> int:
        """Bytes trickled so far, over every connection (declarations and leads not counted)."""
        return sum(c.sent for c in self.connections)

    def _run(self) -> None:
        next_byte = time.monotonic() + self.every_s
        while not self._stop.wait(0.05):
            with self._lock:
                due = time.monotonic() >= next_byte
                for connection in self.connections:
                    connection.poll()
                    if due:
                        connection.trickle(BYTE)
            if due:
                next_byte += self.every_s

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()

    def __enter__(self) -> Tricklers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
