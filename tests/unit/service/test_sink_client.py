"""The payload logger's lean HTTP/1.1 connection against a raw asyncio server in the test:
many events written at once on one kept-alive connection, answers matched in order, a
connection the sink closes (``Connection: close``, a reset mid-pipeline) failing only what
was in flight on it, a timeout breaking the connection, Basic auth from the URL."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from service.observability.sink_client import Target, connect

Answer = Callable[[int, bytes], Awaitable[bytes | None]]
"""(request number, request head) → the raw answer, or None to close the connection."""


class Sink:
    """The server and its connections' writers, to close them all at the end."""

    def __init__(self, server: asyncio.Server, writers: list[asyncio.StreamWriter]) -> None:
        self.server, self.writers = server, writers

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self.writers), return_exceptions=True)
        self.server.close()
        await self.server.wait_closed()
        await asyncio.sleep(0)


async def serve(answer: Answer) -> tuple[Sink, str, dict[str, int]]:
    seen = {"connections": 0, "requests": 0}
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                seen["requests"] += 1
                reply = await answer(seen["requests"], head)
                if reply is None:
                    break
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return Sink(server, writers), f"http://127.0.0.1:{port}/events", seen


def ok(status: int = 200, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n%s\r\nok" % (status, extra)


class Answers:
    """A pipeline's answers as they come, by token, and a way to wait for them."""

    def __init__(self) -> None:
        self.got: dict[int, int | str] = {}
        self.changed = asyncio.Event()

    def __call__(self, token: int, answer: int | str) -> None:
        self.got[token] = answer
        self.changed.set()

    async def wait(self, n: int) -> dict[int, int | str]:
        async with asyncio.timeout(5):
            while len(self.got) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.got


def requests(target: Target, tokens: range, body: bytes = b"x") -> list[tuple[int, bytes, bytes]]:
    return [(t, target.request_head({"ce-id": str(t)}, len(body)), body) for t in tokens]


def test_events_are_pipelined_on_one_connection_and_answered_in_order() -> None:
    async def scenario() -> tuple[dict[int, int | str], dict[str, int]]:
        async def answer(n: int, head: bytes) -> bytes:
            assert head.startswith(b"POST /events HTTP/1.1\r\n")
            return ok(200 if n % 3 else 503)  # every third answered 503

        server, url, seen = await serve(answer)
        target, answers = Target.of(url), Answers()
        pipeline = await connect(target, answers, 2, None)
        pipeline.write(requests(target, range(1, 31)))  # one write, thirty requests
        got = await answers.wait(30)
        pipeline.close()
        await server.close()
        return got, seen

    got, seen = asyncio.run(scenario())
    assert seen == {"connections": 1, "requests": 30}
    assert got == {n: 200 if n % 3 else 503 for n in range(1, 31)}


def test_an_answer_with_connection_close_closes_the_pipeline() -> None:
    async def scenario() -> tuple[dict[int, int | str], bool, dict[str, int]]:
        async def answer(n: int, head: bytes) -> bytes:
            return ok(close=True)

        server, url, seen = await serve(answer)
        target, answers = Target.of(url), Answers()
        pipeline = await connect(target, answers, 2, None)
        pipeline.write(requests(target, range(1)))
        got = await answers.wait(1)
        still_open = pipeline.open
        await server.close()
        return got, still_open, seen

    got, still_open, seen = asyncio.run(scenario())
    assert got == {0: 200}
    assert not still_open  # the courier dials a new connection for what comes next
    assert seen["connections"] == 1


def test_a_connection_dropped_mid_pipeline_fails_only_what_was_in_flight_on_it() -> None:
    async def scenario() -> dict[int, int | str]:
        async def answer(n: int, head: bytes) -> bytes | None:
            return None if n == 2 else ok()  # the second request: the sink hangs up

        server, url, _ = await serve(answer)
        target, answers = Target.of(url), Answers()
        pipeline = await connect(target, answers, 2, None)
        pipeline.write(requests(target, range(3)))
        got = await answers.wait(3)
        await server.close()
        return got

    assert asyncio.run(scenario()) == {0: 200, 1: "connection", 2: "connection"}  # these are retried


def test_a_timeout_breaks_the_connection_and_a_dead_port_refuses() -> None:
    async def scenario() -> tuple[dict[int, int | str], bool]:
        stall = asyncio.Event()

        async def answer(n: int, head: bytes) -> bytes:
            if n == 1:
                await stall.wait()
            return ok()

        server, url, _ = await serve(answer)
        target, answers = Target.of(url), Answers()
        pipeline = await connect(target, answers, 2, None)
        pipeline.write(requests(target, range(2)))
        await asyncio.sleep(0.3)
        pipeline.expire(asyncio.get_running_loop().time(), 0.2)
        got = await answers.wait(2)
        stall.set()
        await server.close()
        with pytest.raises(ConnectionRefusedError):
            await connect(Target.of(url), answers, 0.5, None)  # nobody listens there now
        return got, pipeline.open

    got, still_open = asyncio.run(scenario())
    assert got == {0: "timeout", 1: "connection"}
    assert not still_open


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_the_host() -> None:
    target = Target.of("https://user:p%40ss@logs.example:8443/in?x=1")
    assert (target.host, target.port, target.tls) == ("logs.example", 8443, True)
    token = base64.b64encode(b"user:p@ss").decode()
    assert (
        target.head == f"POST /in?x=1 HTTP/1.1\r\nHost: logs.example:8443\r\nAuthorization: Basic {token}\r\n"
    )
    assert Target.of("http://sink").head == "POST / HTTP/1.1\r\nHost: sink\r\n"
    assert Target.of("http://sink").request_head({"ce-id": "7"}, 2) == (
        b"POST / HTTP/1.1\r\nHost: sink\r\nContent-Length: 2\r\nce-id: 7\r\n\r\n"
    )
    with pytest.raises(ValueError, match="http:// or https://"):
        Target.of("ftp://sink/")
