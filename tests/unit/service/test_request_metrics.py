"""The request metrics in-process, in front of stand-in apps (prometheus_client's default
registry: no worker, no multiprocess files). Against a served process, with BentoML's
metrics switched off, see tests/integration/service/test_api.py and test_prometheus.py."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from service.http import request_metrics
from service.http.asgi import Receive, Scope, Send
from service.http.request_metrics import RequestMetrics, metrics_endpoint
from service.observability import metrics
from service.settings import MODEL_VERSION_HEADER
from tests.unit.service.test_guards import call, ok_app


def sample(name: str, endpoint: str, status: int, version: str = "") -> float:
    labels = {
        "endpoint": endpoint,
        "http_response_code": str(status),
        "service_name": "svc",
        "service_version": "not available",
        "runner_name": "svc",
        "version": version,
    }
    return REGISTRY.get_sample_value(name, labels) or 0.0


def answers(status: int, version: str | None = None):  # type: ignore[no-untyped-def]
    """An app answering ``status``, naming ``version`` in the response header when given."""
    headers = [(b"content-type", b"application/json")]
    if version is not None:
        headers.append((MODEL_VERSION_HEADER.encode(), version.encode()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


def test_each_request_is_counted_and_timed_by_route_and_status() -> None:
    middleware = RequestMetrics(ok_app, service_name="svc", routes=("/predict",))
    assert sample("bentoml_service_request_total", "/predict_columns", 200) == 0
    before = sample("bentoml_service_request_total", "/predict", 200)
    timed = sample("bentoml_service_request_duration_seconds_count", "/predict", 200)
    for _ in range(3):
        assert call(middleware)[0] == 200
    assert sample("bentoml_service_request_total", "/predict", 200) == before + 3
    assert sample("bentoml_service_request_duration_seconds_count", "/predict", 200) == timed + 3
    refused = RequestMetrics(answers(429), service_name="svc", routes=())
    before_429 = sample("bentoml_service_request_total", "/predict", 429)
    call(refused)
    assert sample("bentoml_service_request_total", "/predict", 429) == before_429 + 1


def test_declared_routes_start_at_zero_so_rate_has_a_first_point() -> None:
    RequestMetrics(ok_app, service_name="svc", routes=("/declared",))
    for status in (200, 500):
        assert (
            REGISTRY.get_sample_value(
                "bentoml_service_request_total",
                {
                    "endpoint": "/declared",
                    "http_response_code": str(status),
                    "service_name": "svc",
                    "service_version": "not available",
                    "runner_name": "svc",
                    "version": "",
                },
            )
            == 0.0
        )


def svc_series(name: str, version: str = "") -> dict[tuple[str, str], float]:
    """Every sample ``name`` of the service "svc" and ``version``: {(endpoint, status): value}."""
    return {
        (s.labels["endpoint"], s.labels["http_response_code"]): s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name and s.labels.get("service_name") == "svc" and s.labels["version"] == version
    }


def counted_since(before: dict[tuple[str, str], float], name: str) -> dict[tuple[str, str], float]:
    """What each (endpoint, status) series of "svc" gained since ``before`` (the unchanged left out)."""
    after = svc_series(name)
    return {
        key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)
    }


def test_unknown_paths_cannot_grow_the_series_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    total, timed = "bentoml_service_request_total", "bentoml_service_request_duration_seconds_count"
    middleware = RequestMetrics(answers(404), service_name="svc", routes=())
    before_total, before_timed = svc_series(total), svc_series(timed)
    for n in range(5):
        call(middleware, path=f"/scan/{n}", method="GET")
    assert counted_since(before_total, total) == {("unmatched", "404"): 5}
    assert counted_since(before_timed, timed) == {("unmatched", "404"): 5}
    assert not any(endpoint.startswith("/scan") for endpoint, _ in svc_series(total))

    monkeypatch.setattr(request_metrics, "MAX_ENDPOINTS", 2)
    capped = RequestMetrics(ok_app, service_name="svc", routes=())
    before_total, before_timed = svc_series(total), svc_series(timed)
    for path in ("/a", "/b", "/c", "/d", "/a"):
        call(capped, path=path, method="GET")
    # the first two paths get series of their own; the rest count as "other"
    expected = {("/a", "200"): 2, ("/b", "200"): 1, ("other", "200"): 2}
    assert counted_since(before_total, total) == expected
    assert counted_since(before_timed, timed) == expected
    assert not {("/c", "200"), ("/d", "200")} & svc_series(total).keys()
    labels = {"service_name": "svc", "service_version": "not available", "runner_name": "svc", "version": ""}
    assert REGISTRY.get_sample_value(total, {**labels, "endpoint": "/a", "http_response_code": "200"}) == (
        before_total.get(("/a", "200"), 0.0) + 2
    )


def test_the_version_that_answered_is_read_from_the_response() -> None:
    """Prediction routes name the version in their response; others count under ""."""
    total, timed = "bentoml_service_request_total", "bentoml_service_request_duration_seconds_count"
    before = {
        v: (sample(total, "/predict", 200, v), sample(timed, "/predict", 200, v))
        for v in ("abc123", "def456", "")
    }
    for app, times in ((answers(200, "abc123"), 2), (answers(200, "def456"), 1), (answers(200), 1)):
        middleware = RequestMetrics(app, service_name="svc", routes=("/predict",))
        for _ in range(times):
            call(middleware)
    for version, added in (("abc123", 2), ("def456", 1), ("", 1)):
        assert sample(total, "/predict", 200, version) == before[version][0] + added, version
        assert sample(timed, "/predict", 200, version) == before[version][1] + added, version
    refused = RequestMetrics(answers(503), service_name="svc", routes=())
    before_503 = sample(total, "/predict", 503)
    call(refused)  # refused before any version was chosen: the response names none
    assert sample(total, "/predict", 503) == before_503 + 1


def test_versions_cannot_grow_the_series_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    total = "bentoml_service_request_total"
    monkeypatch.setattr(metrics, "MAX_VERSIONS", 2)
    version = {"v": ""}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await answers(200, version["v"])(scope, receive, send)

    middleware = RequestMetrics(app, service_name="svc", routes=())
    before = {v: svc_series(total, v) for v in ("cap-a", "cap-b", "cap-c", "cap-d", metrics.OTHER_VERSION)}
    for name in ("cap-a", "cap-b", "cap-c", "cap-d", "cap-a"):
        version["v"] = name
        call(middleware, path="/capped")

    def added(v: str) -> float:
        return svc_series(total, v).get(("/capped", "200"), 0.0) - before[v].get(("/capped", "200"), 0.0)

    # the first two versions get series of their own; the rest count as "other"
    assert {v: added(v) for v in before} == {
        "cap-a": 2,
        "cap-b": 1,
        "cap-c": 0,
        "cap-d": 0,
        metrics.OTHER_VERSION: 2,
    }
    assert not svc_series(total, "cap-c")
    assert not svc_series(total, "cap-d")
    assert {key[2] for key in middleware._series} == {"cap-a", "cap-b"}, "only real versions are kept"


def test_a_failing_app_counts_as_500_and_the_error_propagates() -> None:
    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    middleware = RequestMetrics(fails, service_name="svc", routes=())
    before = sample("bentoml_service_request_total", "/predict", 500)
    with pytest.raises(RuntimeError, match="boom"):
        call(middleware)
    assert sample("bentoml_service_request_total", "/predict", 500) == before + 1
    assert (
        REGISTRY.get_sample_value(
            "bentoml_service_request_in_progress",
            {"service_name": "svc", "service_version": "not available", "runner_name": "svc"},
        )
        == 0
    )


def test_the_scrape_is_not_counted_and_shows_the_series() -> None:
    middleware = RequestMetrics(metrics_endpoint, service_name="svc", routes=("/predict",))
    before = sample("bentoml_service_request_total", "/metrics", 200)
    status, headers, body = call(middleware, path="/metrics", method="GET")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    assert b'bentoml_service_request_total{endpoint="/predict",http_response_code="200"' in body
    assert sample("bentoml_service_request_total", "/metrics", 200) == before == 0


def test_lifespan_passes_through() -> None:
    seen = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    asyncio.run(RequestMetrics(app, service_name="svc", routes=())({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]
