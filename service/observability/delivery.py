"""Delivering one sink's payload events: a bounded outbox, batched writes on one pipelined
connection (``service.observability.sink_client``), retries, and a circuit for a sink that
cannot be reached.

Costs, per event, on the worker's event loop (benchmarks/observability_bench.py): a
coroutine per event in flight, woken to send and woken by its answer, with events leaving
5 ms apart, cost single-row /predict 9% of its throughput at 10% sampling; nearly all of it
was loop turns and system calls, not the work. So nothing here waits per event. An
offered event waits in the outbox until ``LINGER_S`` after the first of a batch, or until
``BATCH`` are waiting; one write sends them all (at most ``WINDOW`` in flight); each answer
settles its event from the parser's callback. Counting is in plain integers, which the
payload log publishes to Prometheus a few times a second.

Failures: a 5xx answer or a broken connection is tried again after 0.1, 0.2, 0.4 s (the
same event, the same id); any other answer, and a timeout, is final. A sink that refuses
connections is dialled again after the same backoff while its events wait; after the
fourth failure in a row it is *down*: what waits fails, and new events are dropped at once,
one comparison each (a dead sink used to cost the worker 17% of its throughput in connects
and timers, and its queue's memory), until a probe about once a second connects again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from service.observability.sink_client import Answer, Pipeline, Target, connect

log = logging.getLogger("crop_yield.payloads")

LINGER_S = 0.05
"""How long the first event of a batch waits for others to share its write: at 10% sampling
some 600 events a second, about 30 a write (at 5 ms, 3 a write cost twice as much)."""
BATCH = 64
"""Events waiting that are written at once, without lingering (full sampling, bursts), or a
quarter of the outbox's bound if that is fewer."""
WINDOW = 256
"""Events in flight at most on a sink's connection (the depth of the pipeline)."""
RETRIES = 3
BACKOFF_S = 0.1
"""Waits before the retries of one event, and between dials: 0.1, 0.2, 0.4 s."""
PROBE_S = 1.0
"""How often a sink that is down is dialled again."""
RENDER_INLINE_BYTES = 1 << 20
"""Events from this size on are rendered (gRPC messages written as JSON) in a thread."""
COMPLAIN_EVERY_S = 60.0
"""A sink that keeps failing is logged at most once a minute (with the count since)."""


class Sized(Protocol):
    size: int


E = TypeVar("E", bound=Sized)


class Outbox(Generic[E]):
    """One sink's events waiting (with the attempts each has had) or in flight, bounded by
    count and by bytes: an event's bytes count until its delivery ends."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.waiting: deque[tuple[E, int]] = deque()
        self.in_flight = 0
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.waiting)

    @property
    def pending(self) -> int:
        """Events not yet delivered: waiting or in flight."""
        return len(self.waiting) + self.in_flight

    def offer(self, event: E) -> bool:
        """Queue ``event``; False (dropped) when that would pass either bound."""
        if len(self.waiting) + self.in_flight >= self.max_events or self.nbytes + event.size > self.max_bytes:
            return False
        self.waiting.append((event, 0))
        self.nbytes += event.size
        return True

    def take(self) -> tuple[E, int]:
        self.in_flight += 1
        return self.waiting.popleft()

    def again(self, event: E, attempt: int) -> None:
        """An event taken comes back, first in line, for attempt number ``attempt``."""
        self.in_flight -= 1
        self.waiting.appendleft((event, attempt))

    def done(self, event: E) -> None:
        self.in_flight -= 1
        self.nbytes -= event.size

    def clear(self) -> int:
        """Forget every event, waiting or in flight; how many there were."""
        left = self.pending
        self.waiting.clear()
        self.in_flight = self.nbytes = 0
        return left


@dataclass(frozen=True)
class RetryPolicy:
    """Which failed attempts are tried again, and after how long."""

    retries: int = RETRIES
    backoff_s: float = BACKOFF_S

    @staticmethod
    def retryable(answer: Answer) -> bool:
        """5xx and connection errors (refused, reset, a connection that closed) are tried
        again; other answers are final, and so is a timeout (the sink may have the event, and
        a slow sink would only get slower)."""
        return answer == "connection" or (isinstance(answer, int) and answer >= 500)

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0 for the first)."""
        return self.backoff_s * float(2**retry)


DEFAULT_POLICY = RetryPolicy()
Render = Callable[[E], tuple[dict[str, str], bytes]]


class Courier(Generic[E]):
    """Delivers the events offered to one sink URL; counts outcomes into ``counts``."""

    def __init__(
        self,
        url: str,
        render: Render[E],
        prepare: Callable[[E], object],
        counts: dict[str, int],
        outbox: Outbox[E],
        timeout: float,
        policy: RetryPolicy = DEFAULT_POLICY,
        window: int = WINDOW,
    ) -> None:
        self.url = url
        self.target = Target.of(url)
        self.render = render
        self.prepare = prepare
        """Called on the loop before an event is rendered in a thread (gives it its id)."""
        self.counts = counts
        self.outbox = outbox
        self.timeout = timeout
        self.policy = policy
        self.window = window
        self._batch = max(1, min(BATCH, outbox.max_events // 4))
        """Events waiting that leave at once: a small outbox must not fill while they linger."""
        self.down = False
        self.closed = False
        self.failures = 0
        self.complained_at = float("-inf")
        self._tls = ssl.create_default_context() if self.target.tls else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pipeline: Pipeline[tuple[E, int]] | None = None
        self._dials = 0  # connects failed in a row
        self._dial_at = 0.0
        self._connecting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self._blocked = False  # events wait for room in the window: they have lingered already
        self._aside: set[asyncio.Task[None]] = set()  # events rendered in a thread

    @property
    def shown(self) -> str:
        """The URL for log lines, without a password it may carry."""
        scheme, _, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.outbox.waiting:
            self._schedule()

    def offer(self, event: E) -> bool:
        """Queue ``event`` (the hot path); False when it is dropped: the sink is down or
        the outbox full."""
        if self.down or not self.outbox.offer(event):
            return False
        if self._timer is None or len(self.outbox.waiting) >= self._batch:
            self._schedule()
        return True

    def expire(self) -> None:
        """The oldest request in flight answers "timeout" once past the timeout."""
        if self._pipeline is not None and self._loop is not None:
            self._pipeline.expire(self._loop.time(), self.timeout)

    async def close(self) -> int:
        """Stop; the events not delivered yet (dropped), counted."""
        self.closed = True
        left = self.outbox.clear()
        self.counts["dropped"] += left
        tasks = [*self._aside, *([self._connecting] if self._connecting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        if self._pipeline is not None:
            self._pipeline.close()
        return left

    # -- sending -------------------------------------------------------------------------

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None or self._soon or self.closed:
            return
        if self._blocked or len(self.outbox.waiting) >= self._batch:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._soon = True
            loop.call_soon(self._flush)
        elif self._timer is None:
            self._timer = loop.call_later(LINGER_S, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._soon = self._blocked = False
        if self.closed or not self.outbox.waiting:
            return
        pipeline = self._pipeline
        if pipeline is None or not pipeline.open:
            self._dial()
            return
        room = self.window - len(pipeline.waiting) - len(self._aside)
        batch = []
        while room > 0 and self.outbox.waiting:
            event, attempt = self.outbox.take()
            room -= 1
            if event.size >= RENDER_INLINE_BYTES:
                self._render_aside(event, attempt)
                continue
            try:
                headers, body = self.render(event)
            except Exception:  # a bug in rendering must not stop the sink's deliveries
                log.exception("payload logging: could not render an event for %s", self.shown)
                self._settle(event, "failed")
                continue
            batch.append(((event, attempt), self.target.request_head(headers, len(body)), body))
        if batch:
            pipeline.write(batch)
        self._blocked = bool(self.outbox.waiting)

    def _render_aside(self, event: E, attempt: int) -> None:
        """A bulk gRPC call's JSON, in a thread, so that the loop keeps answering calls."""
        assert self._loop is not None
        self.prepare(event)  # on the loop: one id at every sink
        task = self._loop.create_task(self._render_in_thread(event, attempt))
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    async def _render_in_thread(self, event: E, attempt: int) -> None:
        try:
            headers, body = await asyncio.to_thread(self.render, event)
        except Exception:
            log.exception("payload logging: could not render an event for %s", self.shown)
            self._settle(event, "failed")
            return
        pipeline = self._pipeline
        if pipeline is not None and pipeline.open:
            pipeline.write([((event, attempt), self.target.request_head(headers, len(body)), body)])
        else:
            self.outbox.again(event, attempt)
            self._schedule()

    def _answered(self, token: tuple[E, int], answer: Answer) -> None:
        """The parser's callback: one event's answer."""
        if self.closed:
            return
        event, attempt = token
        if isinstance(answer, int) and 200 <= answer < 300:
            self._settle(event, "sent")
        elif self.policy.retryable(answer) and attempt < self.policy.retries and not self.down:
            assert self._loop is not None
            self._loop.call_later(self.policy.delay(attempt), self._again, event, attempt + 1)
        else:
            self._complain(answer)
            self._settle(event, "failed")
        if self.outbox.waiting:
            self._schedule()

    def _again(self, event: E, attempt: int) -> None:
        if self.closed:
            return
        if self.down:
            self._settle(event, "failed")
            return
        self.outbox.again(event, attempt)
        self._schedule()

    def _settle(self, event: E, outcome: str) -> None:
        self.outbox.done(event)
        self.counts[outcome] += 1

    # -- connecting ----------------------------------------------------------------------

    def _dial(self) -> None:
        if self._connecting is None and not self.closed:
            assert self._loop is not None
            wait = max(0.0, self._dial_at - self._loop.time())
            self._connecting = self._loop.create_task(self._connect(wait))

    async def _connect(self, wait: float) -> None:
        assert self._loop is not None
        if wait:
            await asyncio.sleep(wait)
        try:
            self._pipeline = await connect(self.target, self._answered, self.timeout, self._tls)
        except (OSError, TimeoutError):
            self._dials += 1
            if self._dials > self.policy.retries and not self.down:
                self.down = True
                failed = len(self.outbox.waiting)
                while self.outbox.waiting:
                    self._settle(self.outbox.take()[0], "failed")
                self.failures += failed - 1
                self._complain("connection")
                log.warning(
                    "payload logging: %s is down; its events are dropped until it answers", self.shown
                )
            wait = PROBE_S if self.down else min(self.policy.delay(self._dials - 1), PROBE_S)
            self._dial_at = self._loop.time() + wait
        else:
            if self.down:
                log.info("payload logging: %s answers again", self.shown)
            self._dials = 0
            self.down = False
        self._connecting = None
        if self.down or self.outbox.waiting:
            if self._pipeline is not None and self._pipeline.open:
                self._schedule()
            else:
                self._dial()

    def _complain(self, answer: Answer) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self.complained_at >= COMPLAIN_EVERY_S:
            what = f"answered {answer}" if isinstance(answer, int) else f"{answer} error"
            log.warning(
                "payload logging: %d events not delivered to %s since the last report (last: %s)",
                self.failures,
                self.shown,
                what,
            )
            self.failures = 0
            self.complained_at = now
