"""Hot routes answered ahead of BentoML's router: the innermost of the service's middleware.

A request to ``POST /predict`` through BentoML's API layer pays for its routing (every
``@bentoml.api`` route, then the mounted apps, are matched in turn), its context
middleware and its per-call API machinery (signature inspection, dependency injection,
response headers): a py-spy profile under wrk put that near a fifth of the worker's time
for single-row calls. So the hot routes go straight to their front end's own ASGI app
here, after every guard of the service (request id and deadline, authentication, body and
concurrency limits, media type) has passed. Everything else, and the ``@bentoml.api``
declarations that describe the same routes in ``/docs.json``, stay BentoML's.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.http.asgi import ASGIApp, Receive, Scope, Send


class HotPaths:
    """``routes`` maps (method, path) to an app; ``prefixes`` maps a path prefix to an app."""

    def __init__(
        self, app: ASGIApp, routes: Mapping[tuple[str, str], ASGIApp], prefixes: Mapping[str, ASGIApp]
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.prefixes = tuple(prefixes.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            target = self.routes.get((scope["method"], path))
            if target is None:
                for prefix, app in self.prefixes:
                    if path == prefix or path.startswith(prefix + "/"):
                        target = app
                        break
            if target is not None:
                await target(scope, receive, send)
                return
        await self.app(scope, receive, send)
