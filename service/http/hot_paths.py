"""Hot routes answered ahead of BentoML's router: the innermost of the service's middleware.

A request to ``POST /predict`` through BentoML's API layer pays for its routing (every
``@bentoml.api`` route, then the mounted apps, are matched in turn), its context middleware
and its per-call API machinery (signature inspection, dependency injection, response
headers), a large share of a single-row call's cost (the profile: docs/architecture.md,
"Figures behind the design"). So the hot routes go straight to their front end's own ASGI
app here, after every guard of the service (request id and deadline, authentication, body
and concurrency limits, media type) has passed. Everything else, and the ``@bentoml.api``
declarations that describe the same routes in ``/docs.json``, stay BentoML's.

Another method on a hot path is answered here too: 405 with ``Allow`` in the error table's
format (BentoML's router answered ``TRACE /metrics`` 404, which API checkers such as
schemathesis flag). A path served by GET also answers HEAD (uvicorn sends no body).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from service.http import errors
from service.http.asgi import ASGIApp, Receive, Scope, Send


class HotPaths:
    """``routes`` maps (method, path) to an app; any other path that ``claims`` (the
    service passes ``service.http.paths.is_v2``) goes to ``tree``, whatever its method."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[tuple[str, str], ASGIApp],
        tree: ASGIApp,
        claims: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        for method, path in routes:
            if method == "GET":
                self.routes.setdefault(("HEAD", path), routes[method, path])
        self.allowed: dict[str, list[str]] = {}
        for method, path in sorted(self.routes):
            self.allowed.setdefault(path, []).append(method)
        self.tree = tree
        self.claims = claims

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            target = self.routes.get((scope["method"], path))
            if target is None and self.claims(path):
                target = self.tree
            if target is not None:
                await target(scope, receive, send)
                return
            allowed = self.allowed.get(path)
            if allowed is not None:
                await refuse_method(scope, send, allowed)
                return
        await self.app(scope, receive, send)


async def refuse_method(scope: Scope, send: Send, allowed: list[str]) -> None:
    """405 naming the methods the path takes, in ``Allow`` and in the message."""
    shown = ", ".join(allowed)
    message = f"{scope['method']} is not allowed here; use {shown}"
    await errors.send_error(
        send, scope, errors.METHOD_NOT_ALLOWED, ["method"], message, ((b"allow", shown.encode()),)
    )
