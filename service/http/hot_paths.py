"""Hot routes answered ahead of BentoML's router: the innermost of the service's middleware.

A request to ``POST /predict`` through BentoML's API layer pays for its routing (every
``@bentoml.api`` route, then the mounted apps, are matched in turn), its context middleware
and its per-call API machinery (signature inspection, dependency injection, response
headers), a large share of a single-row call's cost (the profile: docs/architecture.md,
"Figures behind the design"). So the hot routes go straight to their front end's own ASGI
app here, after every guard of the service (request id and deadline, authentication, body
and concurrency limits, media type) has passed. Everything else, and the ``@bentoml.api``
declarations that describe the same routes in ``/docs.json``, stay BentoML's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
        await self.app(scope, receive, send)
