"""What the data plane refuses, as exceptions of its own (no HTTP status, no BentoML class),
and why a store entry cannot be loaded (``ModelLoadError``: at start-up, not per request).

Each carries a ``kind``: the short error type every front end answers it as. The HTTP
error table (``service.http.errors``) has an entry of each kind; gRPC maps kinds to status
codes; a kind missing from either fails mypy (gRPC) or ``tests/unit/service/test_errors.py``.
``field`` names the request field at fault, where there is one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from contract import store_home


class Kind(StrEnum):
    """What kind of refusal: the value is the HTTP error table's ``error``; gRPC maps each
    member to a status code (``service.grpc.servicer.status_of``, checked exhaustive by mypy)."""

    INVALID = "invalid request"
    NOT_FOUND = "not found"
    NOT_READY = "not ready"
    OVERLOADED = "overloaded"
    CONFLICT = "conflict"


class DataPlaneError(Exception):
    kind: ClassVar[Kind]
    field: ClassVar[str | None] = None
    version: str | None = None
    """The model version the call had been given to when it was refused (None: before that),
    so that a refusal is counted under the version it happened to, as answers are."""


class OverloadedError(DataPlaneError):
    """Rows waited longer than the batching queue's latency limit: shed, retry later."""

    kind = Kind.OVERLOADED


class NotReadyError(DataPlaneError):
    """The model is not loaded (or warmed up) yet."""

    kind = Kind.NOT_READY


class VersionNotServedError(DataPlaneError):
    """A call named a version of the model that is not served (the message lists those that are)."""

    kind = Kind.NOT_FOUND


class VersionLoadError(DataPlaneError):
    """A version could not be taken into service (its entry breaks the contract, or its
    warm-up failed); the served set is left as it was. Triton answers a failed load 400."""

    kind = Kind.INVALID
    version: str

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"version {version!r} was not loaded: {reason}")
        self.version = version
        self.reason = reason


class ControlError(DataPlaneError):
    """A change of the served set that the model control refuses: control is not explicit,
    the served-set file is read-only, or the change would leave no default."""

    kind = Kind.CONFLICT


class NotConvergedError(DataPlaneError):
    """The served set changed, but not every worker serves it yet (they will: it is recorded)."""

    kind = Kind.NOT_READY


class NoIntervalsError(DataPlaneError):
    """An interval was asked of a model whose metadata has no interval statistics."""

    kind = Kind.INVALID
    field = "interval"


class NoExplanationsError(DataPlaneError):
    """An explanation was asked of a model whose metadata has no training means (schema 1 to 3)."""

    kind = Kind.INVALID
    field = "explain"


class ModelLoadError(RuntimeError):
    """The store entry is missing or does not follow the contract."""


def missing_model_message(tag: str) -> str:
    return (
        f"model {tag} is not in the model store {store_home()}; "
        "train one with `python -m training` or set CROP_YIELD_MODEL_TAG"
    )
