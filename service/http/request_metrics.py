"""Request metrics, recorded by the service itself, and ``GET /metrics``.

BentoML's traffic-metrics middleware is switched off (``metrics.enabled: false`` in the
service's configuration): it looked up four labelled series for every request and wrote
each to its multiprocess file, and a py-spy profile of single-row calls put it at about a
sixth of the worker's time. The same series are recorded here, under BentoML's names and
labels (so dashboards written for BentoML still work), with each labelled series bound
once per route and status, and written to Prometheus once a second and before each scrape
(``service.observability.deferred``). ``/metrics`` went with BentoML's middleware and is
served here.

The ``endpoint`` label is the request's path, except that a 404 counts as ``unmatched``
and, after ``MAX_ENDPOINTS`` distinct paths, further ones count as ``other``: a scanner
trying random paths must not grow the scraper's series without bound.

The ``version`` label is the model version that answered, read from the response's own
``x-model-version`` header (``MODEL_VERSION_HEADER``, which every prediction route
sets), "" for a response without one; after ``metrics.MAX_VERSIONS`` values, ``other``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import bentoml

from service.http.asgi import ASGIApp, Message, Receive, Scope, Send
from service.observability import deferred, metrics
from service.observability.statistics import STATISTICS
from service.settings import MODEL_VERSION_HEADER

log = logging.getLogger("crop_yield.metrics")

METRICS_PATH = "/metrics"
MAX_ENDPOINTS = 64
_VERSION_HEADER = MODEL_VERSION_HEADER.encode()  # ASGI header names are lower-case bytes


class RequestMetrics:
    """Count, time and track in-progress every HTTP request but the scrape itself."""

    def __init__(self, app: ASGIApp, service_name: str, routes: tuple[str, ...]) -> None:
        # Built by Starlette in the worker on its first request (the lifespan), once BentoML
        # has set the served Bento's name and version, which are BentoML's label values.
        self.app = app
        context = bentoml.server_context
        self.identity = {
            "service_name": context.bento_name or service_name,
            "service_version": context.bento_version,
            "runner_name": service_name,
        }
        self._series: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._bound_labels: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._endpoints: set[str] = set()
        self._versions: set[str] = set()
        self._in_progress = deferred.Gauge(metrics.requests_in_progress().labels(**self.identity))
        for route in routes:  # zero samples from the start, so rate() has a first point
            for status in (200, 500):
                self._bound(route, status, "")

    def _bound(self, path: str, status: int, version: str) -> tuple[Any, Any]:
        series = self._series.get((path, status, version))
        if series is not None:
            return series
        endpoint = "unmatched" if status == 404 else path
        if endpoint not in self._endpoints and len(self._endpoints) >= MAX_ENDPOINTS:
            endpoint = "other"
        self._endpoints.add(endpoint)
        answered = version
        if answered not in self._versions and len(self._versions) >= metrics.MAX_VERSIONS:
            answered = metrics.OTHER_VERSION
        self._versions.add(answered)
        series = self._bound_labels.get((endpoint, status, answered))
        if series is None:  # bound once per label set: "other" and "unmatched" included
            labels = {
                **self.identity,
                "endpoint": endpoint,
                "http_response_code": str(status),
                "version": answered,
            }
            series = self._bound_labels[(endpoint, status, answered)] = (
                deferred.Counter(metrics.requests_total().labels(**labels)),
                deferred.Histogram(metrics.request_duration().labels(**labels)),
            )
        if endpoint == path and answered == version:  # only real routes and versions are kept
            self._series[(path, status, version)] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app fails before answering
        version = ""

        async def send_and_note(message: Message) -> None:
            nonlocal status, version
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == _VERSION_HEADER:
                        version = value.decode("latin-1")
                        break
            await send(message)

        self._in_progress.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._in_progress.dec()
            total, duration = self._bound(scope["path"], status, version)
            total.inc()
            duration.observe(time.perf_counter() - started)


async def metrics_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /metrics``: aggregated off the event loop (it reads every worker's files)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    STATISTICS.flush()
    deferred.flush_all()  # this worker's counts are exact; the others' at most a second old
    body = await asyncio.to_thread(metrics.exposition)
    headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
