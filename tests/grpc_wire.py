"""A gRPC unary call written by hand over HTTP/2 (the ``h2`` package), so that a test decides
when each part of the message is sent: a call held in flight across a signal, a message that
trickles in. grpcio's own client always sends the whole message at once."""

from __future__ import annotations

import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.events

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


class _Connection(h2.connection.H2Connection):
    """h2 closes the whole connection when the server says GOAWAY, while HTTP/2 lets the streams
    it had already taken finish (RFC 9113, 6.8): the case of a call in flight at shutdown."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        answer = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return answer


def client() -> h2.connection.H2Connection:
    """A client side of an HTTP/2 connection, its preface queued."""
    conn = _Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return conn


def call_headers(authority: str, path: str = MODEL_INFER) -> list[tuple[str, str]]:
    """The request headers of a gRPC call of ``path``."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def prefix(length: int) -> bytes:
    """gRPC's message prefix: not compressed, then the message's length (big-endian)."""
    return b"\0" + length.to_bytes(4, "big")


class RawCall:
    """One call of ``path`` carrying ``message`` (a serialized protobuf), sent in parts by
    ``send``; ``answer`` ends the message and reads the status. ``declared`` overrides the
    length the 5-byte gRPC prefix announces (a client that promises more than it sends)."""

    def __init__(
        self,
        address: tuple[str, int],
        message: bytes,
        path: str = MODEL_INFER,
        metadata: tuple[tuple[str, str], ...] = (),
        declared: int | None = None,
    ) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.conn = client()
        self.stream = self.conn.get_next_available_stream_id()
        headers = [*call_headers(f"{address[0]}:{address[1]}", path), *metadata]
        self.conn.send_headers(self.stream, headers)
        self.payload = prefix(len(message) if declared is None else declared) + message
        self.sent = 0
        self.status: int | None = None
        self.details = ""
        self.data = b""
        self._flush()

    @property
    def remaining(self) -> int:
        return len(self.payload) - self.sent

    def send(self, nbytes: int) -> None:
        """The next ``nbytes`` of the framed message, within HTTP/2 flow control."""
        end = min(len(self.payload), self.sent + nbytes)
        while self.sent < end:
            window = min(self.conn.local_flow_control_window(self.stream), self.conn.max_outbound_frame_size)
            if window <= 0:
                self._receive()  # wait for the server's WINDOW_UPDATE
                continue
            piece = self.payload[self.sent : min(end, self.sent + window)]
            self.conn.send_data(self.stream, piece)
            self.sent += len(piece)
            self._flush()

    def answer(self, timeout: float = 30) -> tuple[int, str, bytes]:
        """Send what is left, end the stream and wait for (grpc-status, grpc-message, response
        message without its prefix)."""
        self.send(self.remaining)
        self.conn.end_stream(self.stream)
        self._flush()
        deadline = time.monotonic() + timeout
        while self.status is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no gRPC status")
            self._receive()
        return self.status, self.details, self.data[5:]

    def close(self) -> None:
        self.sock.close()

    def _flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.data += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                fields = {_text(k): _text(v) for k, v in event.headers}
                if "grpc-status" in fields:
                    self.status = int(fields["grpc-status"])
                    self.details = fields.get("grpc-message", "")
            elif isinstance(event, h2.events.StreamReset):
                raise ConnectionError(f"stream reset: error code {event.error_code}")
        self._flush()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
