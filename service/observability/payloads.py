"""Payload logging: each prediction call as two CloudEvents, as KServe's inference logger
sends them, POSTed to one or more sinks by a background sender (docs/payload-logging.md).

The front ends (``service.http.payloads`` for HTTP, ``service.grpc.payloads`` for gRPC) wrap
the prediction routes only. For a call that ``PayloadLog.keeps`` (the sampling decision, a
hash of the request id, so a call's request and response are kept or dropped together)
they build a ``Call`` holding *references* to what was received and sent (the body bytes,
the header lists, the protobuf messages) and hand it to ``PayloadLog.record``, which puts
one or two ``Event`` objects on each sink's bounded queue and returns: no copying, no
encoding, no I/O on the request's path. Everything else (joining body parts, the V2 JSON of
gRPC messages, the CloudEvents headers, event ids and times) is done by the sender, on the
worker's event loop, between calls.

Delivery never slows or fails a prediction: a full queue (by events or by bytes, per sink)
drops the event; each sink has its own queue and senders, so a dead sink drops its own
events while a healthy one gets all of its own. A delivery attempt has a timeout; 5xx
answers and connection errors are retried a few times with exponential backoff, other
answers (4xx) and timeouts are not (a slow sink would only get slower). Outcomes are counted
in ``crop_yield_payload_events_total{outcome="sent|failed|dropped"}``. At a graceful shutdown
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
from service.observability.sink_client import Failure, SinkClient

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("crop_yield.payloads")

REQUEST_TYPE: Final = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE: Final = "org.kubeflow.serving.inference.response"
COMPONENT: Final = "predictor"
"""``ce-component``: KServe's name for the component that predicts."""
SENDERS_PER_SINK = 64
"""Deliveries in flight at once to one sink, per worker: the depth of the pipeline on its one
kept-alive connection (service.observability.sink_client)."""
RETRIES = 3
BACKOFF_S = 0.1
"""Waits before the retries of one event: 0.1, 0.2, 0.4 s."""
FLUSH_S = 2.0
"""Seconds what is still queued at a graceful shutdown gets to be delivered."""
RENDER_INLINE_BYTES = 1 << 20
"""Events from this size on are rendered (gRPC messages written as JSON) in a thread."""
COMPLAIN_EVERY_S = 60.0
"""A sink that keeps failing is logged at most once a minute (with the count since)."""
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


class EventQueue:
    """One sink's events waiting or being delivered, bounded by count and by bytes (an
    event's bytes count until its delivery ends). Each event queued wakes one sender."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.in_flight = 0
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def __len__(self) -> int:
        return self._events.qsize()

    @property
    def pending(self) -> int:
        """Events not yet delivered: waiting or in flight."""
        return self._events.qsize() + self.in_flight

    def offer(self, event: Event) -> bool:
        """Queue ``event``; False (dropped) when that would pass either bound."""
        if (
            self._events.qsize() + self.in_flight >= self.max_events
            or self.nbytes + event.size > self.max_bytes
        ):
            return False
        self._events.put_nowait(event)
        self.nbytes += event.size
        return True

    async def take(self) -> Event:
        event = await self._events.get()
        self.in_flight += 1
        return event

    def done(self, event: Event) -> None:
        self.in_flight -= 1
        self.nbytes -= event.size

    def waiting(self) -> list[Event]:
        """The events not taken yet, oldest first."""
        return list(self._events._queue)  # type: ignore[attr-defined]

    def clear(self) -> int:
        """Forget the waiting events; how many there were."""
        left = 0
        while not self._events.empty():
            self.nbytes -= self._events.get_nowait().size
            left += 1
        return left


@dataclass(frozen=True)
class RetryPolicy:
    """Which failed attempts are tried again, and after how long."""

    retries: int = RETRIES
    backoff_s: float = BACKOFF_S

    @staticmethod
    def retryable(answer: int | Failure) -> bool:
        """5xx and connection errors (refused, reset, a connection that closed) are tried
        again; other answers are final, and so is a timeout (the sink may have the event, and
        a slow sink would only get slower)."""
        return answer == "connection" or (isinstance(answer, int) and answer >= 500)

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0 for the first)."""
        return self.backoff_s * float(2**retry)


@dataclass
class Sink:
    url: str
    queue: EventQueue
    failures: int = 0
    complained_at: float = float("-inf")

    @property
    def shown(self) -> str:
        """The URL for log lines, without a password it may carry."""
        scheme, _, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


class PayloadLog:
    """The events of the calls ``keeps`` chooses, on each sink's queue; ``start`` starts the
    senders on the running loop, ``close`` flushes and stops them."""

    def __init__(
        self,
        sinks: Sequence[str],
        identity: Identity,
        mode: Mode = "all",
        rate: float = 1.0,
        max_events: int = 10_000,
        max_bytes: int = 64 << 20,
        timeout: float = 2.0,
        policy: RetryPolicy = RetryPolicy(),
        senders: int = SENDERS_PER_SINK,
    ) -> None:
        self.sinks = [Sink(url, EventQueue(max_events, max_bytes)) for url in sinks]
        self.identity = identity
        self.requests = mode in ("all", "request")
        self.responses = mode in ("all", "response")
        self.rate = rate
        self.timeout = timeout
        self.policy = policy
        self.senders = senders
        self._counters: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: dict[str, SinkClient] | None = None

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
        """Queue the call's events on every sink (the hot path: no I/O, no copies)."""
        events = []
        if self.requests:
            events.append(Event(call, "request", call.request_size))
        if self.responses:
            events.append(Event(call, "response", call.response_size))
        dropped = 0
        for sink in self.sinks:
            for event in events:
                if not sink.queue.offer(event):
                    dropped += 1
        if dropped:
            self._count("dropped", dropped)

    def _count(self, outcome: str, n: int = 1) -> None:
        counter = self._counters.get(outcome)
        if counter is None:  # bound on first use: in the worker, once metrics go to files
            counter = self._counters[outcome] = metrics.payload_events().labels(outcome=outcome)
        counter.inc(n)

    def start(self) -> None:
        """The senders, on the running loop (the worker's start-up hook)."""
        for outcome in OUTCOMES:  # zero samples from the start, so rate() has a first point
            self._count(outcome, 0)
        self._clients = {sink.url: SinkClient(sink.url, self.timeout) for sink in self.sinks}
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send(sink)) for sink in self.sinks for _ in range(self.senders)]

    async def close(self, timeout: float = FLUSH_S) -> None:
        """Give what is queued ``timeout`` seconds to go out, then stop; what is left is
        counted as dropped."""
        if self._clients is None:
            return
        deadline = time.monotonic() + timeout
        while any(sink.queue.pending for sink in self.sinks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        left = sum(sink.queue.clear() for sink in self.sinks)
        if left:
            self._count("dropped", left)
            log.warning("payload logging: %d events still queued at shutdown were dropped", left)
        for client in self._clients.values():
            client.close()
        self._clients = None
        self._tasks = []

    async def _send(self, sink: Sink) -> None:
        while True:
            event = await sink.queue.take()
            outcome = "dropped"  # unless delivery ends: cancelled at shutdown
            try:
                outcome = await self._deliver(sink, event)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in rendering must not stop the sender
                log.exception("payload logging: could not send an event to %s", sink.shown)
                outcome = "failed"
            finally:
                sink.queue.done(event)
                self._count(outcome)

    async def _deliver(self, sink: Sink, event: Event) -> str:
        """The outcome, "sent" or "failed", after the retries the policy allows."""
        assert self._clients is not None
        client = self._clients[sink.url]
        event_id(event, self.identity)  # here, on the loop: one id at every sink
        if event.size < RENDER_INLINE_BYTES:
            headers, body = render(event, self.identity)
        else:  # a bulk gRPC call's JSON: in a thread, so that the loop keeps answering calls
            headers, body = await asyncio.to_thread(render, event, self.identity)
        retry = 0
        while True:
            answer = await client.post(headers, body)
            if isinstance(answer, int) and 200 <= answer < 300:
                return "sent"
            if retry >= self.policy.retries or not self.policy.retryable(answer):
                self._complain(sink, answer)
                return "failed"
            await asyncio.sleep(self.policy.delay(retry))
            retry += 1

    def _complain(self, sink: Sink, answer: int | Failure) -> None:
        sink.failures += 1
        now = time.monotonic()
        if now - sink.complained_at >= COMPLAIN_EVERY_S:
            what = f"answered {answer}" if isinstance(answer, int) else f"{answer} error"
            log.warning(
                "payload logging: %d events not delivered to %s since the last report (last: %s)",
                sink.failures,
                sink.shown,
                what,
            )
            sink.failures = 0
            sink.complained_at = now
