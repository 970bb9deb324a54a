"""Slow and abusive clients, overload, request ids and JSON logs, against a served process.

The server here answers 408 to a body that stalls for 2 s, has 64 concurrency slots and
JSON logs; everything runs on loopback and is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import Server, serving
from tests.v2_cases import ONE_ROW

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BODY_TIMEOUT_S = 2.0
SLOTS = 64
ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
ANSWER_408 = b"HTTP/1.1 408 Request Timeout\r\n"


@pytest.fixture(scope="module")
def guarded(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {"body_timeout": str(BODY_TIMEOUT_S), "max_concurrency": str(SLOTS), "log_format": "json"}
    with serving(trained_home, tmp_path_factory.mktemp("traffic"), **settings) as served:
        yield served


def worker_rss_mb(server: Server) -> float:
    children = psutil.Process(server.process.pid).children(recursive=True)
    return max(p.memory_info().rss for p in children) / 2**20


async def stall(port: int, mid_body: bool) -> asyncio.StreamReader:
    """A connection that sends headers and half a body (or half the headers), then waits."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if mid_body:
        writer.write(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"inputs": [' + b" " * 100
        )
    else:
        writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le")
    await writer.drain()
    reader.writer = writer  # type: ignore[attr-defined]  # keep the writer (and socket) alive
    return reader


async def answer_or_close(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """The first line the server sends, b"" when it closes the connection, or TimeoutError."""
    return await asyncio.wait_for(reader.readline(), timeout)


def test_stalled_connections_starve_nobody(guarded: Server) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])
    rss_before = worker_rss_mb(guarded)

    async def scenario() -> tuple[list[int], list[float], list[bytes], float]:
        started = time.monotonic()
        bodies = await asyncio.gather(*(stall(port, mid_body=True) for _ in range(300)))
        headers = await asyncio.gather(*(stall(port, mid_body=False) for _ in range(300)))
        # Meanwhile, normal clients: 200 requests over 20 connections, /predict and V2.
        statuses: list[int] = []
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as client:

            async def one(i: int) -> None:
                t0 = time.monotonic()
                if i % 2:
                    response = await client.post("/predict", json={"inputs": [ROW]})
                else:
                    response = await client.post(
                        "/v2/models/crop_yield/infer",
                        content=ONE_ROW,
                        headers={"content-type": "application/json"},
                    )
                latencies.append(time.monotonic() - t0)
                statuses.append(response.status_code)

            for batch in range(10):
                await asyncio.gather(*(one(batch * 20 + i) for i in range(20)))
        # Every stalled body is answered 408 or closed within the deadline (plus a margin).
        remaining = BODY_TIMEOUT_S + 3 - (time.monotonic() - started)
        first_lines = await asyncio.gather(*(answer_or_close(r, max(remaining, 0.5)) for r in bodies))
        elapsed = time.monotonic() - started
        for reader in [*bodies, *headers]:
            reader.writer.close()  # type: ignore[attr-defined]
        return statuses, latencies, first_lines, elapsed

    statuses, latencies, first_lines, elapsed = asyncio.run(scenario())
    rss_growth = worker_rss_mb(guarded) - rss_before
    print(
        f"600 stalled: normal requests {len(statuses)}, slowest {max(latencies) * 1000:.0f} ms; "
        f"stalled bodies: {first_lines.count(ANSWER_408)} x 408, "
        f"{first_lines.count(b'')} closed, all within {elapsed:.1f} s; worker RSS +{rss_growth:.0f} MB"
    )
    assert statuses == [200] * 200
    assert max(latencies) < 2.0, f"slowest normal request took {max(latencies):.2f} s"
    assert all(line in (b"", ANSWER_408) for line in first_lines), set(first_lines)
    assert first_lines.count(ANSWER_408) > 0
    assert elapsed < BODY_TIMEOUT_S + 5
    assert rss_growth < 100, "memory grew with the stalled connections"
    assert httpx.get(f"{guarded.url}/readyz").status_code == 200


def test_a_slow_but_steady_upload_is_not_refused(guarded: Server) -> None:
    """100,000 rows (2.4 MB) in 24 pieces 0.2 s apart: about 5 s, more than twice the 2 s
    inactivity limit (which a whole-body deadline of 2 s would have refused), never idle."""
    n = 100_000
    body = json.dumps({"temperature": [73.0] * n, "rainfall": [67.0] * n, "humidity": [43.0] * n}).encode()
    piece = len(body) // 24 + 1

    def slowly() -> Iterator[bytes]:
        for start in range(0, len(body), piece):
            time.sleep(0.2)
            yield body[start : start + piece]

    started = time.monotonic()
    response = httpx.post(
        f"{guarded.url}/predict_columns",
        content=slowly(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert time.monotonic() - started > 2 * BODY_TIMEOUT_S
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["apples"]) == n


def _closed_requests(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bentoml_service_request_total{") and 'http_response_code="499"' in line
    )


def test_a_client_that_hangs_up_mid_body_is_let_go_at_once(guarded: Server) -> None:
    """Counted 499 (nginx's "client closed request") within a moment; unanswered, it stayed
    pending in BentoML's timeout middleware until its backstop and held a shutdown."""
    before = _closed_requests(guarded)

    async def hang_up() -> None:
        reader = await stall(int(guarded.url.rsplit(":", 1)[1]), mid_body=True)
        await asyncio.sleep(0.2)
        reader.writer.close()  # type: ignore[attr-defined]

    asyncio.run(hang_up())
    deadline = time.monotonic() + 3  # well inside the body timeout and the request timeout
    while _closed_requests(guarded) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _closed_requests(guarded) == before + 1


def test_a_408_names_the_deadline(guarded: Server) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])

    async def one() -> bytes:
        reader = await stall(port, mid_body=True)
        data = await asyncio.wait_for(reader.read(), BODY_TIMEOUT_S + 5)  # until the server closes
        reader.writer.close()  # type: ignore[attr-defined]
        return data

    answer = asyncio.run(one())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in head.lower()
    assert b"x-request-id: " in head.lower()
    assert "CROP_YIELD_BODY_TIMEOUT" in json.loads(body)["detail"][0]["msg"]


def test_a_flood_gets_only_200_429_503_with_retry_after(guarded: Server) -> None:
    body = json.dumps({"inputs": [ROW] * 2_000}).encode()

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(base_url=guarded.url, limits=limits, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/predict", content=body, headers={"content-type": "application/json"})
                    for _ in range(400)
                )
            )

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    print("flood statuses:", {s: statuses.count(s) for s in set(statuses)})
    assert set(statuses) <= {200, 429, 503}
    assert 200 in statuses
    assert 429 in statuses, "64 slots and 400 concurrent requests: some must be refused"
    for response in responses:
        assert response.headers["x-request-id"]
        if response.status_code != 200:
            assert response.headers["retry-after"] == "1"
            assert "retry" in response.text.lower()
    assert httpx.get(f"{guarded.url}/readyz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/predict", {"inputs": [ROW]}, 200),
        ("POST", "/predict", {"inputs": []}, 400),
        ("POST", "/predict_columns", {"temperature": [1]}, 400),
        ("POST", "/v2/models/crop_yield/infer", {"inputs": []}, 400),
        ("GET", "/v2/models/pears", None, 404),
        ("GET", "/metadata", None, 200),
        ("GET", "/readyz", None, 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/docs.json", None, 200),
    ],
)
def test_request_ids_on_every_route(
    guarded: Server, method: str, path: str, body: object, status: int
) -> None:
    given = httpx.request(method, f"{guarded.url}{path}", json=body, headers={"x-request-id": "client-7.a_b"})
    assert given.status_code == status
    assert given.headers["x-request-id"] == "client-7.a_b"
    made = httpx.request(method, f"{guarded.url}{path}", json=body)
    assert len(made.headers["x-request-id"]) == 32
    for insane in ("has spaces in it", "x" * 129, "tab\there"):
        replaced = httpx.request(method, f"{guarded.url}{path}", json=body, headers={"x-request-id": insane})
        assert replaced.headers["x-request-id"] != insane
        assert len(replaced.headers["x-request-id"]) == 32


def test_json_log_lines_carry_the_request(guarded: Server) -> None:
    response = httpx.post(
        f"{guarded.url}/predict",
        json={"inputs": [{**ROW, "humidity": 120}]},
        headers={"x-request-id": "log-me-1"},
    )
    assert response.status_code == 400
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in guarded.log.read_text().splitlines() if line.startswith("{")]
        about = [line for line in lines if line["request_id"] == "log-me-1"]
        if about:
            break
        time.sleep(0.1)
    assert about, "no log line carries the request id"
    assert about[0]["route"] == "/predict"
    assert about[0]["status"] == 400
    assert {"time", "level", "logger", "message"} <= set(about[0])
    text = guarded.log.read_text().splitlines()
    assert all(line.startswith("{") for line in text if line.strip()), "every line is a JSON object"


def test_text_log_lines_carry_the_request_id(server: Server) -> None:
    httpx.post(
        f"{server.url}/predict",
        json={"inputs": [{**ROW, "rainfall": -1}]},
        headers={"x-request-id": "txt-42"},
    )
    deadline = time.monotonic() + 5
    while "[request txt-42]" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "[request txt-42]" in server.log.read_text()
