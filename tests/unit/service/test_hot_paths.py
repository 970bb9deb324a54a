"""Which app answers which request (service.http.hot_paths), without a server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.http import paths
from service.http.hot_paths import HotPaths


class Named:
    """An ASGI app that records that it was called."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.log.append(self.name)


def answered_by(scope: dict[str, Any]) -> str:
    """The app that answered, or "405 <Allow>" when the hot paths refused the method."""
    log: list[str] = []
    hot = HotPaths(
        Named("bentoml", log),
        routes={("POST", "/predict"): Named("predict", log), ("GET", "/metrics"): Named("metrics", log)},
        tree=Named("v2", log),
        claims=paths.is_v2,
    )
    sent: list[Any] = []

    async def nothing() -> Any:
        raise AssertionError("not read here")

    async def keep(message: Any) -> None:
        sent.append(message)

    asyncio.run(hot({"headers": [], **scope}, nothing, keep))
    if sent:
        assert not log
        start, body = sent
        allow = dict(start["headers"])[b"allow"].decode()
        assert f"{scope['method']} is not allowed here; use {allow}".encode() in body["body"]
        return f"{start['status']} {allow}"
    assert len(log) == 1
    return log[0]


@pytest.mark.parametrize(
    ("method", "path", "app"),
    [
        ("POST", "/predict", "predict"),
        ("GET", "/predict", "405 POST"),  # the hot paths' other methods: 405 with Allow
        ("TRACE", "/metrics", "405 GET, HEAD"),
        ("GET", "/metrics", "metrics"),
        ("HEAD", "/metrics", "metrics"),  # a GET path takes HEAD (uvicorn sends no body)
        ("POST", "/predict/", "bentoml"),
        ("GET", "/v2", "v2"),
        ("GET", "/v2/health/ready", "v2"),
        ("POST", "/v2/models/crop_yield/infer", "v2"),
        ("DELETE", "/v2/models/crop_yield/infer", "v2"),  # the V2 app's 405, in its format
        ("GET", "/v2x", "bentoml"),
        ("GET", "/v2health", "bentoml"),
        ("GET", "/docs.json", "bentoml"),
    ],
)
def test_requests_go_to_their_app(method: str, path: str, app: str) -> None:
    assert answered_by({"type": "http", "method": method, "path": path}) == app
    assert (app == "v2") is paths.is_v2(path)


def test_other_scopes_stay_bentomls() -> None:
    assert answered_by({"type": "lifespan"}) == "bentoml"
    assert answered_by({"type": "websocket", "path": "/v2/models/crop_yield/infer"}) == "bentoml"
