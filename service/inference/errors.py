"""What the data plane refuses, as exceptions of its own (no HTTP status, no BentoML class).

Each carries a ``kind``: the short error type every front end answers it as. The HTTP
error table (``service.http.errors``) has an entry of each kind; gRPC maps kinds to status
codes. ``field`` names the request field at fault, where there is one.
"""

from __future__ import annotations

from typing import ClassVar


class DataPlaneError(Exception):
    kind: ClassVar[str]
    field: ClassVar[str | None] = None


class OverloadedError(DataPlaneError):
    """Rows waited longer than the batching queue's latency limit: shed, retry later."""

    kind = "overloaded"


class NotReadyError(DataPlaneError):
    """The model is not loaded (or warmed up) yet."""

    kind = "not ready"


class NoIntervalsError(DataPlaneError):
    """An interval was asked of a model whose metadata has no interval statistics."""

    kind = "invalid request"
    field = "interval"
