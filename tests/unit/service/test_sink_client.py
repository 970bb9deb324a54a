"""The payload logger's lean HTTP/1.1 client against a raw asyncio server in the test: many
events pipelined on one kept-alive connection, answers matched in order, a connection the
sink closes (``Connection: close``, a reset mid-pipeline) failing only what was in flight
on it, a timeout breaking the connection, Basic auth from the URL."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from service.observability.sink_client import SinkClient, Target

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


def test_events_are_pipelined_on_one_connection_and_answered_in_order() -> None:
    async def scenario() -> tuple[list[int | str], dict[str, int]]:
        async def answer(n: int, head: bytes) -> bytes:
            assert head.startswith(b"POST /events HTTP/1.1\r\n")
            return ok(200 if n % 3 else 503)  # every third answered 503

        server, url, seen = await serve(answer)
        client = SinkClient(url, timeout=2)
        answers = await asyncio.gather(*(client.post({"ce-id": str(i)}, b"x" * i) for i in range(30)))
        client.close()
        await server.close()
        return list(answers), seen

    answers, seen = asyncio.run(scenario())
    assert seen == {"connections": 1, "requests": 30}
    assert answers == [200 if n % 3 else 503 for n in range(1, 31)]


def test_a_sink_that_closes_after_each_answer_gets_a_new_connection_per_event() -> None:
    async def scenario() -> tuple[list[int | str], dict[str, int]]:
        async def answer(n: int, head: bytes) -> bytes:
            return ok(close=True)

        server, url, seen = await serve(answer)
        client = SinkClient(url, timeout=2)
        answers = [await client.post({}, b"{}") for _ in range(5)]
        client.close()
        await server.close()
        return answers, seen

    answers, seen = asyncio.run(scenario())
    assert answers == [200] * 5
    assert seen["connections"] == 5


def test_a_connection_dropped_mid_pipeline_fails_only_what_was_in_flight_on_it() -> None:
    async def scenario() -> tuple[list[int | str], int | str, dict[str, int]]:
        async def answer(n: int, head: bytes) -> bytes | None:
            return None if n == 2 else ok()  # the second request: the sink hangs up

        server, url, seen = await serve(answer)
        client = SinkClient(url, timeout=2)
        first = await asyncio.gather(*(client.post({}, b"a") for _ in range(3)))
        after = await client.post({}, b"b")  # a new connection
        client.close()
        await server.close()
        return list(first), after, seen

    first, after, seen = asyncio.run(scenario())
    assert first[0] == 200
    assert first[1:] == ["connection", "connection"]  # the retry policy tries these again
    assert after == 200
    assert seen["connections"] == 2


def test_a_timeout_breaks_the_connection_and_a_dead_port_is_a_connection_failure() -> None:
    async def scenario() -> tuple[int | str, int | str, int | str]:
        stall = asyncio.Event()

        async def answer(n: int, head: bytes) -> bytes:
            if n == 1:
                await stall.wait()
            return ok()

        server, url, _ = await serve(answer)
        client = SinkClient(url, timeout=0.2)
        timed_out = await client.post({}, b"slow")
        stall.set()
        later = await client.post({}, b"next")
        client.close()
        await server.close()
        dead = await SinkClient(url.replace("/events", "/"), timeout=0.5).post({}, b"x")
        return timed_out, later, dead

    timed_out, later, dead = asyncio.run(scenario())
    assert (timed_out, later, dead) == ("timeout", 200, "connection")


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_the_host() -> None:
    target = Target.of("https://user:p%40ss@logs.example:8443/in?x=1")
    assert (target.host, target.port, target.tls) == ("logs.example", 8443, True)
    token = base64.b64encode(b"user:p@ss").decode()
    assert (
        target.head == f"POST /in?x=1 HTTP/1.1\r\nHost: logs.example:8443\r\nAuthorization: Basic {token}\r\n"
    )
    assert Target.of("http://sink").head == "POST / HTTP/1.1\r\nHost: sink\r\n"
    with pytest.raises(ValueError, match="http:// or https://"):
        Target.of("ftp://sink/")
