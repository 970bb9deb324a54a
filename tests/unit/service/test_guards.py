"""The ASGI guards in-process, each in front of a stand-in app: no server, milliseconds each.
What only a real server shows (sockets, stalled clients, BentoML's stack) is in
tests/integration/service/test_traffic.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from service.docs.openapi import patch_spec
from service.http.asgi import ASGIApp, Message, Receive, Scope, Send
from service.http.guards import BearerAuth, JsonOnly, UnroutableV2Paths
from service.http.paths import is_probe, is_protected
from service.http.traffic import RequestContext, RequestGate
from service.inference.admission import Slots
from service.observability.context import REQUEST_ID


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive() if scope["method"] == "POST" else {"body": b""}
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": message.get("body", b"")})


def call(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    path: str = "/predict",
    method: str = "POST",
    body: list[bytes] | None = None,
    headers: dict[str, str] | None = None,
    delay_s: float = 0.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request through ``app``; the body arrives in the given chunks, ``delay_s`` apart."""
    chunks = list(body or [b""])
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.sleep(delay_s)
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, b"".join(m.get("body", b"") for m in sent[1:])


def gate(**overrides: Any) -> RequestGate:
    options = {"max_bytes": 100, "body_timeout": 0.2, "slots": Slots(2), "exempt": is_probe, **overrides}
    return RequestGate(ok_app, **options)


@pytest.fixture(params=["alone", "behind the request context"])
def gates(request: pytest.FixtureRequest) -> Callable[..., ASGIApp]:
    """The gate alone times the body's inactivity itself; behind the request context (as
    served) it sets the limit on the request's deadline entry (service.http.deadlines)."""

    def make(**overrides: Any) -> ASGIApp:
        return gate(**overrides) if request.param == "alone" else RequestContext(gate(**overrides), timeout=5)

    return make


def test_the_gate_replays_a_body_received_in_chunks(gates: Callable[..., ASGIApp]) -> None:
    status, _, body = call(gates(), body=[b'{"a":', b" 1}"])
    assert (status, body) == (200, b'{"a": 1}')


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"body": [b"x" * 101]}, 413, "CROP_YIELD_MAX_BODY_BYTES"),
        ({"body": [b"x"], "headers": {"content-length": "1000"}}, 413, "limited to 100 bytes"),
        ({"body": [b"x"], "headers": {"content-length": "ten"}}, 413, "limited to 100 bytes"),
        ({"body": [b"{", b"}"], "delay_s": 0.3}, 408, "CROP_YIELD_BODY_TIMEOUT"),  # a 0.3 s stall
    ],
)
def test_the_gate_refuses_large_and_slow_bodies(
    gates: Callable[..., ASGIApp], kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    got, headers, body = call(gates(), **kwargs)
    assert got == status
    assert headers["connection"] == "close"
    assert fragment in json.loads(body)["detail"][0]["msg"]


def test_a_slow_but_steady_body_is_not_refused(gates: Callable[..., ASGIApp]) -> None:
    """Six chunks 0.15 s apart: 0.9 s in all, far beyond the 0.2 s inactivity limit, but
    never 0.2 s without bytes. (A whole-body deadline of 0.2 s refused this client.)"""
    status, _, body = call(gates(), body=[b'{"a":', b" ", b"1", b" ", b" ", b"}"], delay_s=0.15)
    assert (status, body) == (200, b'{"a": 1  }')


def test_a_body_below_the_minimum_rate_is_refused_after_the_grace_period(
    gates: Callable[..., ASGIApp],
) -> None:
    chunks = [b"x"] * 8  # 1 byte every 0.1 s: 10 bytes/s, never idle for the 0.2 s limit
    status, headers, body = call(gates(min_rate=50, rate_grace=0.35), body=chunks, delay_s=0.1)
    assert (status, headers["connection"]) == (408, "close")
    message = json.loads(body)["detail"][0]["msg"]
    assert "below 50 bytes/s (CROP_YIELD_BODY_MIN_RATE) after 0.35 s" in message
    # The same trickle within the grace period, or above the rate, passes.
    assert call(gates(min_rate=50, rate_grace=5), body=[b"x"] * 4, delay_s=0.1)[0] == 200
    assert call(gates(min_rate=5, rate_grace=0.1), body=[b"x"] * 4, delay_s=0.1)[0] == 200


def test_the_gate_refuses_above_its_slots_with_retry_after_and_exempts_probes() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await ok_app(scope, receive, send)

    async def scenario() -> list[int]:
        guarded = RequestGate(slow, max_bytes=100, body_timeout=1, slots=Slots(2), exempt=is_probe)
        statuses: list[int] = []

        async def one(path: str) -> None:
            sent: list[Message] = []

            async def receive() -> Message:
                return {"type": "http.request", "body": b"{}", "more_body": False}

            async def send(message: Message) -> None:
                sent.append(message)
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                    if message["status"] == 429:
                        assert (b"retry-after", b"1") in message["headers"]

            await guarded({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)

        tasks = [asyncio.create_task(one("/predict")) for _ in range(3)]
        await asyncio.sleep(0.05)
        probe = asyncio.create_task(one("/readyz"))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*tasks, probe)
        return statuses

    statuses = asyncio.run(scenario())
    assert sorted(statuses) == [200, 200, 200, 429]  # two slots; the probe took none


def test_request_ids_are_kept_when_sane_and_made_otherwise() -> None:
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(REQUEST_ID.get())
        await ok_app(scope, receive, send)

    _, headers, _ = call(RequestContext(app, timeout=1), method="GET", headers={"x-request-id": "abc-1"})
    assert headers["x-request-id"] == "abc-1" == seen[-1]
    _, headers, _ = call(RequestContext(app, timeout=1), method="GET", headers={"x-request-id": "a b"})
    assert len(headers["x-request-id"]) == 32
    assert headers["x-request-id"] == seen[-1]


def test_the_request_deadline_answers_504_with_the_request_id() -> None:
    async def hangs(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(10)

    status, headers, body = call(RequestContext(hangs, timeout=0.05), method="GET")
    assert status == 504
    assert headers["x-request-id"]
    assert json.loads(body)["error"] == "timeout"


def test_a_client_that_leaves_mid_body_is_answered_499_so_nothing_waits_for_an_answer() -> None:
    sent: list[Message] = []
    parts: list[Message] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return parts.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    asyncio.run(RequestContext(gate(), timeout=1)(scope, receive, send))  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 499  # what request metrics count; the client reads nothing
    assert json.loads(sent[1]["body"])["error"] == "client closed request"


def test_auth_json_only_and_unroutable_paths() -> None:
    auth = BearerAuth(ok_app, token="t0k", protects=is_protected)
    assert call(auth, headers={"authorization": "Bearer t0k"})[0] == 200
    status, headers, _ = call(auth, headers={"authorization": "Bearer nope"})
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="crop-yield"')
    assert call(auth, path="/livez", method="GET")[0] == 200
    v2_status, _, v2_body = call(auth, path="/v2/models/crop_yield/infer")
    assert v2_status == 401
    assert set(json.loads(v2_body)) == {"error"}  # the V2 error format
    assert (
        call(JsonOnly(ok_app, paths=frozenset({"/predict"})), headers={"content-type": "text/csv"})[0] == 415
    )
    assert call(UnroutableV2Paths(ok_app), path="/v2/models/a\nb", method="GET")[0] == 404


def test_every_error_of_the_table_is_documented_where_it_applies() -> None:
    infer = "/v2/models/{model_name}/infer"
    spec = {
        "paths": {
            "/predict": {"post": {"requestBody": {}, "responses": {}}},
            "/metadata": {"get": {"responses": {}}},
            "/readyz": {"get": {"responses": {}}},
            infer: {"post": {"requestBody": {}, "responses": {}}},
        }
    }
    expected = {
        ("/predict", "post"): {"400", "408", "413", "415", "429", "503", "504"},
        ("/metadata", "get"): {"429", "503", "504"},
        ("/readyz", "get"): set(),  # probes are never refused
        (infer, "post"): {"400", "404", "408", "413", "415", "429", "503", "504"},
    }
    protected = {"/predict", "/metadata", infer}
    for auth in (False, True):
        patched = patch_spec(spec, auth=auth)
        for (path, method), statuses in expected.items():
            responses = patched["paths"][path][method]["responses"]
            wanted = statuses | ({"401"} if auth and path in protected else set())
            assert {s for s in responses if int(s) >= 400} == wanted, (path, method, auth)
    busy = patch_spec(spec, auth=False)["paths"]["/predict"]["post"]["responses"]["503"]["description"]
    assert "batching queue" in busy
    assert "Or: The model is still loading" in busy  # two entries share 503: both are described
