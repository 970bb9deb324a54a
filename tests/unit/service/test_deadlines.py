"""Request deadlines on one timer (service.http.deadlines), on a real event loop."""

from __future__ import annotations

import asyncio
import math

import pytest

from service.http.deadlines import DEADLINE, IDLE, MAX_TICK_S, Deadlines


def run(scenario: object) -> object:
    return asyncio.run(scenario)  # type: ignore[arg-type]


def test_a_request_past_its_deadline_is_cancelled_and_the_cancellation_is_its_own() -> None:
    async def scenario() -> tuple[str, float]:
        deadlines = Deadlines(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        watched = deadlines.watch(started + 0.05)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert watched.expired_by(DEADLINE)  # consumed: nobody else cancelled the task
            return "expired", loop.time() - started
        finally:
            deadlines.done(watched)
        return "slept", loop.time() - started

    outcome, waited = run(scenario())  # type: ignore[misc]
    assert outcome == "expired"
    assert 0.05 <= waited < 0.05 + 0.01 + 0.05  # at most one tick late (plus a busy machine)


def test_a_cancellation_from_elsewhere_is_not_taken_for_the_deadline() -> None:
    async def scenario() -> bool:
        deadlines = Deadlines(0.01)
        watched = deadlines.watch(asyncio.get_running_loop().time() + 0.02)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the server shutting down, say
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            return watched.expired_by(DEADLINE)
        return True

    assert run(scenario()) is False


def test_an_idle_body_expires_by_its_own_limit_and_the_deadline_still_holds() -> None:
    async def scenario() -> list[str]:
        deadlines = Deadlines(0.01)
        loop = asyncio.get_running_loop()
        watched = deadlines.watch(loop.time() + 0.2)
        watched.idle_at = loop.time() + 0.03
        seen = []
        for _ in range(2):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                for limit in (IDLE, DEADLINE):
                    if watched.expired == limit:
                        assert watched.expired_by(limit)
                        seen.append(limit)
        assert watched.idle_at == math.inf
        return seen

    assert run(scenario()) == [IDLE, DEADLINE]


def test_ended_requests_leave_the_list_and_the_timer_stops() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(0.01)
        loop = asyncio.get_running_loop()
        entries = [deadlines.watch(loop.time() + 0.05) for _ in range(3)]
        for watched in entries:
            deadlines.done(watched)
        await asyncio.sleep(0.1)  # past the deadlines: nothing was cancelled
        assert deadlines._timer is None
        assert not deadlines._watched
        assert all(watched.expired is None for watched in entries)

    run(scenario())


@pytest.mark.parametrize(("asked", "tick"), [(3.0, MAX_TICK_S), (0.005, 0.005)])
def test_the_tick_is_at_most_fifty_milliseconds(asked: float, tick: float) -> None:
    assert Deadlines(asked).tick == tick
