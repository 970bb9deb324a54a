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
    log: list[str] = []
    hot = HotPaths(
        Named("bentoml", log),
        routes={("POST", "/predict"): Named("predict", log)},
        tree=Named("v2", log),
        claims=paths.is_v2,
    )

    async def nothing() -> Any:
        raise AssertionError("not read here")

    async def ignore(message: Any) -> None:
        pass

    asyncio.run(hot(scope, nothing, ignore))
    assert len(log) == 1
    return log[0]


@pytest.mark.parametrize(
    ("method", "path", "app"),
    [
        ("POST", "/predict", "predict"),
        ("GET", "/predict", "bentoml"),  # BentoML answers other methods on its routes
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
