"""The request being handled, as context variables: set by each front end's outermost layer
(``service.http.traffic`` for HTTP, ``service.grpc.layers`` for gRPC), read by the log filter
(``service.observability.logs``). The rules both transports share live here: which client
request ids are kept, and how a request past its deadline is worded."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("crop_yield_request_id", default=None)
ROUTE: ContextVar[str | None] = ContextVar("crop_yield_route", default=None)
ROUTING_KEY: ContextVar[str | None] = ContextVar("crop_yield_routing_key", default=None)
"""What canary weights hash to pick a version (``service.inference.routing``): the request
id, or the header ``CROP_YIELD_VERSION_STICKY_HEADER`` names when the request has it."""
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A client's request id is kept when it is 1 to 128 printable ASCII characters, no spaces
(it goes into log lines and response headers as it is)."""


def begin(given_id: str | None, route: str, routing_key: str | None = None) -> str:
    """Enter a request: its id (the client's when sane, else a new one) and route go into the
    context for the log lines; the id is returned for the response. ``routing_key``, when
    given, replaces the id as the key canary weights hash."""
    request_id = (
        given_id if given_id is not None and SANE_REQUEST_ID.fullmatch(given_id) else new_request_id()
    )
    REQUEST_ID.set(request_id)
    ROUTE.set(route)
    ROUTING_KEY.set(request_id if routing_key is None else routing_key)
    return request_id


def new_request_id() -> str:
    """32 random hex digits, like a UUID4's: drawn from the ``random`` module (reseeded in each
    forked worker), a fifth of ``uuid.uuid4().hex``'s cost; ids need to be unique, not secret."""
    return f"{random.getrandbits(128):032x}"


def past_deadline(timeout: float) -> str:
    """What a request not answered within the request timeout is told (504, DEADLINE_EXCEEDED)."""
    return f"not answered within {timeout:g} s (CROP_YIELD_REQUEST_TIMEOUT)"
