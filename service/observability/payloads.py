"""Payload logging: each prediction call as two CloudEvents, as KServe's inference logger
sends them, POSTed to one or more sinks by a background sender (docs/payload-logging.md).

The front ends (``service.http.payloads`` for HTTP, ``service.grpc.payloads`` for gRPC) wrap
the prediction routes only. For a call that ``PayloadLog.keeps`` (the sampling decision, a
hash of the request id, so a call's request and response are kept or dropped together)
they build a ``Call`` holding *references* to what was received and sent (the body bytes,
the header lists, the protobuf messages) and hand it to ``PayloadLog.record``, which offers
one or two ``Event`` objects to each sink's courier and returns: no copying, no encoding,
no I/O on the request's path. Everything else (joining body parts, the V2 JSON of gRPC
messages, the CloudEvents headers, event ids and times) is done when a batch of events is
written, on the worker's event loop, between calls (``service.observability.delivery``).

Delivery never slows or fails a prediction: a full outbox (by events or by bytes, per sink)
drops the event; each sink has its own outbox and connection, so a dead sink drops its own
events while a healthy one gets all of its own. 5xx answers and connection errors are
retried a few times with exponential backoff, other answers (4xx) and timeouts are not (a
slow sink would only get slower); a sink unreachable four times in a row is down, and its
events are dropped at once until it answers again. Outcomes are counted in
``crop_yield_payload_events_total{outcome="sent|failed|dropped"}``. At a graceful shutdown
what is queued gets ``FLUSH_S`` seconds to go out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

from service.observability import metrics
from service.observability.delivery import DEFAULT_POLICY, WINDOW, Courier, Outbox, RetryPolicy

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("crop_yield.payloads")

REQUEST_TYPE: Final = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE: Final = "org.kubeflow.serving.inference.response"
COMPONENT: Final = "predictor"
"""``ce-component``: KServe's name for the component that predicts."""
FLUSH_S = 2.0
"""Seconds what is still queued at a graceful shutdown gets to be delivered."""
TICK_S = 0.25
"""How often timeouts are checked and outcomes published to Prometheus."""
OUTCOMES = ("sent", "failed", "dropped")

Kind = Literal["request", "response"]
Mode = Literal["all", "request", "response"]

_SCALE = 1 << 32
_MIX = 0x9E3779B1
"""Knuth's multiplicative constant: spreads crc32 over the 32-bit range again, so that the
sampled calls do not follow the canary split (``service.inference.routing`` compares the
plain crc32 of the same request id with its thresholds)."""
_HEADER_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"%')
"""Characters a CloudEvents header value carries as they are (HTTP binding 3.1.3.2); others
are percent-encoded."""
_UNSAFE = re.compile(r'[^\x21-\x7e]|["%]')


def sampled(request_id: str, rate: float) -> bool:
    """Whether the call with this request id is logged at ``rate`` (0 to 1): the same answer
    in every worker and process for the same id, so a call's two events stay together."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    point = (zlib.crc32(request_id.encode()) * _MIX) & (_SCALE - 1)
    return point < rate * _SCALE


@dataclass(frozen=True)
class Payload:
    """What an event carries: the body, its media type, and for a V2 binary-tensor body the
    length of its JSON header (``Inference-Header-Content-Length``)."""

    body: bytes
    content_type: str
    header_size: int | None = None


class Call:
    """One prediction call, as its front end saw it; rendered into events off the hot path.

    Subclasses hold references to what was received and sent, and render them on demand.
    """

    __slots__ = ("ended", "protocol", "request_id", "request_size", "response_size", "started", "subject")

    def __init__(
        self,
        protocol: str,
        subject: str,
        request_id: str | None,
        started: float,
        ended: float,
        request_size: int,
        response_size: int,
    ) -> None:
        self.protocol = protocol
        self.subject = subject
        self.request_id = request_id or ""
        self.started = started
        self.ended = ended
        self.request_size = request_size
        self.response_size = response_size

    def request(self) -> Payload:
        raise NotImplementedError

    def response(self) -> Payload:
        raise NotImplementedError

    def attributes(self) -> dict[str, str]:
        """Extension attributes besides the common ones: ``statuscode`` always, and
        ``modelversion``, ``traceparent``, ``tracestate``, ... where known."""
        raise NotImplementedError


class Event:
    """One CloudEvent: a call's request or response. Its id is given when first sent, and
    kept for its retries and its other sinks."""

    __slots__ = ("call", "id", "kind", "size")

    def __init__(self, call: Call, kind: Kind, size: int) -> None:
        self.call = call
        self.kind = kind
        self.size = size
        self.id: str | None = None


@dataclass(frozen=True)
class Identity:
    """The attributes every event of this process carries."""

    source: str
    service_name: str
    endpoint: str
    namespace: str | None = None
    kserve_ids: bool = False

    @cached_property
    def headers(self) -> dict[str, str]:
        """The headers every event carries, encoded once."""
        headers = {
            "ce-specversion": "1.0",
            "ce-source": header_value(self.source),
            "ce-inferenceservicename": header_value(self.service_name),
            "ce-component": COMPONENT,
            "ce-endpoint": header_value(self.endpoint),
        }
        if self.namespace:
            headers["ce-namespace"] = header_value(self.namespace)
        return headers


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def header_value(value: str) -> str:
    return value if _UNSAFE.search(value) is None else quote(value, safe=_HEADER_SAFE)


def event_id(event: Event, identity: Identity) -> str:
    """The event's ``ce-id``, given on first use and kept (retries, other sinks)."""
    if event.id is None:
        call = event.call
        event.id = call.request_id if identity.kserve_ids and call.request_id else uuid.uuid4().hex
    return event.id


def render(event: Event, identity: Identity) -> tuple[dict[str, str], bytes]:
    """The HTTP headers (binary content mode) and body of ``event``."""
    call = event.call
    request = event.kind == "request"
    payload = call.request() if request else call.response()
    headers = {
        **identity.headers,
        "ce-id": header_value(event_id(event, identity)),
        "ce-type": REQUEST_TYPE if request else RESPONSE_TYPE,
        "ce-time": rfc3339(call.started if request else call.ended),
        "ce-subject": header_value(call.subject),
        "ce-protocol": call.protocol,
        "content-type": payload.content_type,
    }
    if call.request_id:
        headers["ce-requestid"] = header_value(call.request_id)
    for name, value in call.attributes().items():
        headers[f"ce-{name}"] = header_value(value)
    if payload.header_size is not None:
        headers["ce-inferenceheadersize"] = str(payload.header_size)
    return headers, payload.body


class PayloadLog:
    """The events of the calls ``keeps`` chooses, offered to each sink's courier; ``start``
    starts delivering on the running loop, ``close`` flushes and stops."""

    def __init__(
        self,
        sinks: Sequence[str],
        identity: Identity,
        mode: Mode = "all",
        rate: float = 1.0,
        max_events: int = 10_000,
        max_bytes: int = 64 << 20,
        timeout: float = 2.0,
        policy: RetryPolicy = DEFAULT_POLICY,
        window: int = WINDOW,
    ) -> None:
        self.identity = identity
        self.requests = mode in ("all", "request")
        self.responses = mode in ("all", "response")
        self.rate = rate
        self.counts = dict.fromkeys(OUTCOMES, 0)
        """Outcomes not yet published to Prometheus (``publish``)."""
        self.sinks: list[Courier[Event]] = [
            Courier(
                url,
                self._render,
                self._prepare,
                self.counts,
                Outbox(max_events, max_bytes),
                timeout,
                policy,
                window,
            )
            for url in sinks
        ]
        self._counters: dict[str, Any] = {}
        self._tick: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PayloadLog | None:
        """None when no sink is configured (payload logging off). ``POD_NAMESPACE`` (set by
        KServe, or from the downward API) gives ``ce-namespace``."""
        if not settings.payload_log_urls:
            return None
        identity = Identity(
            source=settings.payload_log_source or f"http://{socket.gethostname()}:{settings.port}/",
            service_name=settings.payload_log_service_name,
            endpoint=settings.payload_log_endpoint,
            namespace=os.environ.get("POD_NAMESPACE") or None,
            kserve_ids=settings.payload_log_kserve_ids,
        )
        return cls(
            settings.payload_log_urls,
            identity,
            settings.payload_log_mode,
            settings.payload_log_sample,
            settings.payload_log_queue_events,
            settings.payload_log_queue_bytes,
            settings.payload_log_timeout,
        )

    def keeps(self, request_id: str | None) -> bool:
        """Whether the call with this request id is logged (``sampled``)."""
        return self.rate >= 1 or sampled(request_id or "", self.rate)

    def record(self, call: Call) -> None:
        """Offer the call's events to every sink (the hot path: no I/O, no copies)."""
        events = []
        if self.requests:
            events.append(Event(call, "request", call.request_size))
        if self.responses:
            events.append(Event(call, "response", call.response_size))
        for sink in self.sinks:
            for event in events:
                if not sink.offer(event):
                    self.counts["dropped"] += 1

    def _render(self, event: Event) -> tuple[dict[str, str], bytes]:
        return render(event, self.identity)

    def _prepare(self, event: Event) -> None:
        event_id(event, self.identity)

    def publish(self) -> None:
        """Add the outcomes counted since the last time to ``crop_yield_payload_events_total``."""
        for outcome, n in self.counts.items():
            counter = self._counters.get(outcome)
            if counter is None:  # bound on first use: in the worker, once metrics go to files
                counter = self._counters[outcome] = metrics.payload_events().labels(outcome=outcome)
            if n:
                counter.inc(n)
                self.counts[outcome] = 0

    def start(self) -> None:
        """Deliveries, on the running loop (the worker's start-up hook)."""
        self.publish()  # zero samples from the start, so rate() has a first point
        for sink in self.sinks:
            sink.start()
        self._tick = asyncio.get_running_loop().create_task(self._ticking())

    async def _ticking(self) -> None:
        """Timeouts checked and counts published, a few times a second: one timer for every
        event (a per-request ``asyncio.wait_for`` cost more than writing the request)."""
        every = min(min((s.timeout for s in self.sinks), default=1.0) / 4, TICK_S)
        while True:
            await asyncio.sleep(every)
            for sink in self.sinks:
                sink.expire()
            self.publish()

    async def close(self, timeout: float = FLUSH_S) -> None:
        """Give what is queued ``timeout`` seconds to go out, then stop; what is left is
        counted as dropped."""
        if self._tick is None:
            return
        deadline = time.monotonic() + timeout
        while any(sink.outbox.pending for sink in self.sinks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._tick.cancel()
        await asyncio.gather(self._tick, return_exceptions=True)
        self._tick = None
        left = 0
        for sink in self.sinks:
            left += await sink.close()
        if left:
            log.warning("payload logging: %d events still queued at shutdown were dropped", left)
        self.publish()
