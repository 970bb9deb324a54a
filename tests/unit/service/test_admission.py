"""Memory admission (service.inference.admission) and the memory policy it draws on
(service.observability.runtime), in-process. Bursts against a served process are in
tests/integration/service/test_bursts.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from service.inference import admission
from service.inference.admission import BUDGETED_FROM, MemoryBudget
from service.observability import runtime
from tests.unit.service.test_guards import call, gate


def bulk_gate(**overrides: object):  # type: ignore[no-untyped-def]
    return gate(max_bytes=4 * BUDGETED_FROM, **overrides)


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the worker's requests to hand freed memory back."""
    calls: list[int] = []
    monkeypatch.setattr(admission.runtime, "return_freed_memory_soon", lambda: calls.append(1))
    return calls


def test_reservations_within_the_budget_are_immediate(trims: list[int]) -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100, wait_s=1)
        assert await budget.reserve(60)
        assert await budget.reserve(40)
        assert budget.reserved == 100
        budget.release(60)
        budget.release(40)
        assert budget.reserved == 0

    asyncio.run(scenario())


def test_freed_memory_is_handed_back_once_the_budget_has_been_idle(
    trims: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "TRIM_AFTER_IDLE_S", 0.05)

    async def scenario() -> None:
        budget = MemoryBudget(100, wait_s=1)
        for _ in range(3):  # a stream of calls: no trim between them
            assert await budget.reserve(10)
            budget.release(10)
            await asyncio.sleep(0.01)
        assert trims == []
        await asyncio.sleep(0.1)
        assert trims == [1]
        assert await budget.reserve(10)  # busy again when the timer fires: no trim
        budget.release(10)
        assert await budget.reserve(10)
        await asyncio.sleep(0.1)
        assert trims == [1]

    asyncio.run(scenario())


def test_over_the_budget_waits_in_arrival_order_until_released(trims: list[int]) -> None:
    async def scenario() -> list[str]:
        budget = MemoryBudget(100, wait_s=5)
        order: list[str] = []
        assert await budget.reserve(90)

        async def later(name: str, cost: int) -> None:
            assert await budget.reserve(cost)
            order.append(name)

        big, small = asyncio.create_task(later("big", 80)), asyncio.create_task(later("small", 5))
        await asyncio.sleep(0.05)
        assert order == []  # the small one fits, but waits behind the big one
        budget.release(90)
        await asyncio.gather(big, small)
        assert budget.reserved == 85
        return order

    assert asyncio.run(scenario()) == ["big", "small"]


def test_a_reservation_gives_up_after_the_wait_and_lets_the_next_in() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100, wait_s=0.1)
        assert await budget.reserve(50)
        big = asyncio.create_task(budget.reserve(80))
        await asyncio.sleep(0.05)
        small = asyncio.create_task(budget.reserve(10))  # fits, but waits behind the big one
        assert not await big  # gave up after 0.1 s
        assert await small  # then admitted, before its own wait ran out
        assert budget.reserved == 60
        assert not budget._waiting

    asyncio.run(scenario())


def test_waiters_giving_up_together_leave_the_queue_consistent() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100, wait_s=0.05)
        assert await budget.reserve(100)
        results = await asyncio.gather(*(budget.reserve(60) for _ in range(5)))
        assert results == [False] * 5
        assert budget.reserved == 100
        assert not budget._waiting

    asyncio.run(scenario())


def test_alone_anything_is_admitted_and_without_a_budget_nothing_waits() -> None:
    async def scenario() -> None:
        assert await MemoryBudget(100, wait_s=0).reserve(10_000)
        unlimited = MemoryBudget(None, wait_s=0)
        assert await unlimited.reserve(10**12)
        assert await unlimited.reserve(10**12)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_no_reservation_behind() -> None:
    async def scenario() -> None:
        budget = MemoryBudget(100, wait_s=5)
        assert await budget.reserve(100)
        waiter = asyncio.create_task(budget.reserve(50))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        budget.release(100)
        assert budget.reserved == 0
        assert not budget._waiting

    asyncio.run(scenario())


def test_the_budget_is_the_worker_share_of_the_ceiling_less_its_resting_memory() -> None:
    gib = 1 << 30
    assert runtime.memory_budget(2 * gib, workers=1, resting_bytes=gib // 2) == int(1.5 * gib) - gib // 2
    assert runtime.memory_budget(2 * gib, workers=2, resting_bytes=gib // 2) == int(0.75 * gib) - gib // 2
    assert runtime.memory_budget(gib, workers=4, resting_bytes=gib) == 0
    assert runtime.memory_budget(None, workers=1, resting_bytes=0) is None


@pytest.mark.parametrize(
    ("contents", "expected"),
    [("2147483648\n", 2147483648), ("max\n", None), (str(1 << 62), None), (None, None)],
)
def test_the_cgroup_limit_is_read_from_v2_then_v1(
    tmp_path: Path, contents: str | None, expected: int | None
) -> None:
    v2 = tmp_path / "memory.max"
    if contents is not None:
        v2.write_text(contents)
    assert runtime.container_memory_limit((v2,)) == expected
    v1 = tmp_path / "memory.limit_in_bytes"
    v1.write_text("1073741824")
    assert runtime.container_memory_limit((tmp_path / "missing", v1)) == 1 << 30


def test_this_process_has_a_resident_set_and_freed_memory_can_be_handed_back() -> None:
    assert runtime.resident_bytes() > 10 << 20

    async def scenario() -> None:
        runtime.return_freed_memory_soon()
        runtime.return_freed_memory_soon()  # one at a time: the second is a no-op
        assert len(runtime._trimming) <= 1
        await asyncio.gather(*runtime._trimming)

    asyncio.run(scenario())


def test_the_gate_reserves_bulk_bodies_and_answers_503_when_the_budget_stays_taken(trims: list[int]) -> None:
    budget = MemoryBudget(1, wait_s=0.05)
    bulk = {"content-length": str(BUDGETED_FROM), "content-type": "application/json"}
    body = [b"x" * BUDGETED_FROM]
    assert call(bulk_gate(budget=budget), body=body, headers=bulk)[0] == 200
    assert budget.reserved == 0  # released once answered

    small = {"content-length": "10", "content-type": "application/json"}
    asyncio.run(budget.reserve(1))  # another request holds the budget
    assert call(bulk_gate(budget=budget), body=[b"x" * 10], headers=small)[0] == 200  # not budgeted
    status, headers, answer = call(
        bulk_gate(budget=budget), path="/v2/models/m/infer", body=body, headers=bulk
    )
    assert status == 503
    assert headers["retry-after"] == "1"
    assert json.loads(answer)["error"].startswith("memory busy: bulk requests in progress")
    chunked = {"content-type": "application/json"}  # no Content-Length: reserved once read
    assert call(bulk_gate(budget=budget), body=[b"x" * BUDGETED_FROM, b"x"], headers=chunked)[0] == 503
    assert budget.reserved == 1


def test_without_a_budget_the_gate_admits_everything() -> None:
    bulk = {"content-length": str(BUDGETED_FROM), "content-type": "application/json"}
    assert call(bulk_gate(), body=[b"x" * BUDGETED_FROM], headers=bulk)[0] == 200
    assert call(bulk_gate(budget=MemoryBudget(None, 0)), body=[b"x" * BUDGETED_FROM], headers=bulk)[0] == 200
