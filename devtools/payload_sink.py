"""A payload-logging sink for the tests and the benchmark: a local HTTP server in a thread
that reads each POSTed CloudEvent with the CloudEvents SDK and keeps it.

It can answer slowly (``delay`` seconds per event), hold every answer until ``release()``
(``held=True``), or answer another status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http_event


class Received:
    """One event as the sink got it: the SDK's event, the raw headers and body."""

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body
        self.event: Any = from_http_event(HTTPMessage(headers=headers, body=body))

    def __getitem__(self, attribute: str) -> Any:
        """A CloudEvents attribute (``type``, ``id``, an extension such as ``requestid``)."""
        return self.event.get_attributes().get(attribute)

    @property
    def data(self) -> Any:
        return self.event.get_data()


class Sink:
    def __init__(self, delay: float = 0.0, status: int = 200, held: bool = False) -> None:
        self.delay = delay
        self.status = status
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        if not held:
            self._released.set()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the service's sender uses it

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                sink._released.wait()
                if sink.delay:
                    time.sleep(sink.delay)
                with sink._lock:
                    sink.received.append(Received(dict(self.headers), body))
                self.send_response(sink.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._released.set()

    def events(self, keep: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        with self._lock:
            return [r for r in self.received if keep(r)]

    def wait_for(
        self, count: int, keep: Callable[[Received], bool] = lambda r: True, timeout: float = 15
    ) -> list[Received]:
        """The events ``keep`` selects once there are ``count`` of them (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.events(keep)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events(keep)

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
