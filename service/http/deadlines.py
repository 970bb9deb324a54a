"""Request deadlines on one timer per worker instead of one per request.

``asyncio.timeout_at`` starts and stops a libuv timer and builds a handle and a ``Timeout``
object: about 4 µs on uvloop, and a single-row request paid it twice (its deadline, then the
body's inactivity limit around the read), some 5% of its cost in the worker. Here a request's
limits are two floats on an entry (``Watched``) in a list; while requests are in progress one
timer looks the list over every ``tick`` seconds and cancels the task of an entry past a
limit, as ``asyncio.timeout`` would. Whoever waits turns that cancellation into its answer
(``expired``): the request context into 504, the body reader into 408. A limit is met up to
one tick late; the tick is a tenth of the shortest limit, at most 50 ms.
"""

from __future__ import annotations

import asyncio
import math

DEADLINE = "deadline"
IDLE = "idle"
MAX_TICK_S = 0.05


class Watched:
    """One request's limits on the event loop's clock: ``deadline`` for the whole request,
    ``idle_at`` while its body is being read (``math.inf`` otherwise)."""

    __slots__ = ("deadline", "expired", "idle_at", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.idle_at = math.inf
        self.expired: str | None = None
        """Which limit cancelled the task (``DEADLINE`` or ``IDLE``); None while none has."""

    def expired_by(self, limit: str) -> bool:
        """Whether the ``CancelledError`` being handled came from ``limit`` alone (then it is
        consumed, as ``asyncio.timeout`` does): False when the task was cancelled otherwise too."""
        if self.expired != limit:
            return False
        self.expired = None
        return self.task.uncancel() == 0


class Deadlines:
    """The requests in progress on one event loop, looked over every ``tick`` seconds."""

    def __init__(self, tick: float) -> None:
        self.tick = min(tick, MAX_TICK_S)
        self._watched: list[Watched] = []
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, deadline: float) -> Watched:
        """Watch the current task until ``done``: cancelled once past ``deadline`` or ``idle_at``."""
        task = asyncio.current_task()
        assert task is not None, "deadlines are watched from a task"
        watched = Watched(task, deadline)
        self._watched.append(watched)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._look)
        return watched

    @staticmethod
    def done(watched: Watched) -> None:
        """The request has ended: its entry is dropped at the next look."""
        watched.deadline = -math.inf  # marks it done; an expired deadline is never looked at again

    def _look(self) -> None:
        now = asyncio.get_running_loop().time()
        kept = []
        for watched in self._watched:
            if watched.deadline == -math.inf:
                continue
            if watched.deadline <= now:
                watched.expired = DEADLINE
                watched.task.cancel()
                continue
            if watched.idle_at <= now and watched.expired is None:
                watched.expired = IDLE
                watched.idle_at = math.inf
                watched.task.cancel()
            kept.append(watched)
        self._watched = kept
        self._timer = asyncio.get_running_loop().call_later(self.tick, self._look) if kept else None
