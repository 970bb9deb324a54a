"""Unit tests read metrics as a scrape does: after the worker's deferred counts are written
(``service.observability.deferred``: the served process writes them once a second and
before answering ``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client.registry import CollectorRegistry

from service.observability import deferred


@pytest.fixture(autouse=True)
def metrics_read_as_scraped(monkeypatch: pytest.MonkeyPatch) -> None:
    collect = CollectorRegistry.collect

    def flushed_then_collected(self: CollectorRegistry) -> Iterable[Any]:
        deferred.flush_all()
        yield from collect(self)

    monkeypatch.setattr(CollectorRegistry, "collect", flushed_then_collected)  # get_sample_value too
