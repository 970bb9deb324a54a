"""Memory admission (service.inference.admission) and the memory policy it draws on
(service.observability.runtime), in-process. Bursts against a served process are in
tests/integration/service/test_bursts.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.http.asgi import Message, Receive, Scope, Send
from service.http.bodies import PROBATION_SHARE
from service.http.paths import is_probe
from service.http.traffic import RequestContext, RequestGate
from service.inference import admission
from service.inference.admission import BUDGETED_FROM, MemoryBudget, Slots
from service.observability import runtime
from tests.unit.service.test_guards import call, gate, ok_app


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


def test_this_process_has_a_resident_set_and_freed_memory_can_be_handed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert runtime.resident_bytes() > 10 << 20
    assert runtime._malloc_trim() is not None  # glibc's malloc_trim, what the worker calls
    calls: list[int] = []
    trimming = threading.Event()

    def trim(pad: int) -> int:  # stands in for malloc_trim: records, then holds the thread
        calls.append(pad)
        trimming.wait(5)
        return 1

    async def scenario() -> None:
        runtime.return_freed_memory_soon()
        runtime.return_freed_memory_soon()  # one at a time: the second is a no-op
        assert len(runtime._trimming) == 1
        trimming.set()
        await asyncio.gather(*runtime._trimming)
        await asyncio.sleep(0)  # the done callback forgets the finished trim
        assert not runtime._trimming
        runtime.return_freed_memory_soon()  # done: the next one runs
        await asyncio.gather(*runtime._trimming)

    real = runtime._malloc_trim
    monkeypatch.setattr(runtime, "_malloc_trim", lambda: trim)
    asyncio.run(scenario())
    assert calls == [0, 0]  # the whole free heap handed back (no padding kept), twice in all
    monkeypatch.setattr(runtime, "_malloc_trim", real)

    async def for_real() -> None:  # glibc's own, in a thread
        runtime.return_freed_memory_soon()
        assert len(runtime._trimming) == 1
        await asyncio.gather(*runtime._trimming)

    asyncio.run(for_real())


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


# Slow declared bodies (service.http.bodies' module docstring): a body whose Content-Length
# is budgeted holds its reservation only while it keeps pace with the request deadline.
DECLARED = 2 * BUDGETED_FROM
"""What the trickling clients declare; three of their reservations fill the budget."""
PACE_GRACE_S = 0.2


def paced_gate(
    budget: MemoryBudget, app: Callable[[Scope, Receive, Send], object] = ok_app, body_timeout: float = 1.0
) -> RequestContext:
    """The gate behind the request deadline (5 s), as served, with a short pace grace."""
    guarded = RequestGate(
        app,  # type: ignore[arg-type]
        max_bytes=8 * BUDGETED_FROM,
        body_timeout=body_timeout,
        slots=Slots(16),
        exempt=is_probe,
        budget=budget,
        pace_grace=PACE_GRACE_S,
    )
    return RequestContext(guarded, timeout=5.0)


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def trickling(lead: int, every_s: float = 0.3) -> Receive:
    """A client that sends ``lead`` bytes at once, then a byte every ``every_s`` s (inside the
    1 s inactivity limit), for ever."""
    first = True

    async def receive() -> Message:
        nonlocal first
        if first and lead:
            first = False
            return chunk(b" " * lead)
        await asyncio.sleep(every_s)
        return chunk(b" ")

    return receive


def in_pieces(body: bytes, pieces: int, every_s: float, seen: Callable[[], None] = lambda: None) -> Receive:
    """A client that sends ``body`` in ``pieces`` pieces ``every_s`` s apart (the first at once),
    calling ``seen`` before each."""
    size = -(-len(body) // pieces)
    parts = [body[i : i + size] for i in range(0, len(body), size)]

    async def receive() -> Message:
        seen()
        if len(parts) < pieces:
            await asyncio.sleep(every_s)
        part = parts.pop(0)
        return chunk(part, more=bool(parts))

    return receive


async def post(app: RequestContext, receive: Receive, declared: int) -> tuple[int, float]:
    """One POST through ``app``: its status and the seconds until answered."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [(b"content-length", str(declared).encode()), (b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/predict_columns", "headers": headers}
    await app(scope, receive, send)
    return statuses[0], loop.time() - started


def three_trickler_budget() -> MemoryBudget:
    """Room for three trickling clients' reservations, and then none for an honest 1 MiB body
    (reservations taken on a declared size alone made it wait the whole CROP_YIELD_MEMORY_WAIT,
    3 s here, then 503)."""
    return MemoryBudget(3 * MemoryBudget.cost_of(DECLARED), wait_s=3.0)


@pytest.mark.parametrize(
    "lead",
    [
        pytest.param(0, id="trickling from the first byte: never reserved"),
        pytest.param(DECLARED // PROBATION_SHARE, id="a first share at once, then trickling: released"),
    ],
)
def test_trickling_declared_bodies_do_not_hold_the_budget_from_an_honest_bulk_body(
    trims: list[int], lead: int
) -> None:
    async def scenario() -> None:
        budget = three_trickler_budget()
        app = paced_gate(budget)
        tricklers = [asyncio.create_task(post(app, trickling(lead), DECLARED)) for _ in range(3)]
        await asyncio.sleep(0.05)
        if lead:  # through probation: the three hold the whole budget, until they fall behind
            assert budget.reserved == budget.budget_bytes
        else:  # their first share never came: nothing reserved, however many they are
            assert budget.reserved == 0
        honest = b" " * BUDGETED_FROM
        status, took = await post(app, in_pieces(honest, 4, 0.0), len(honest))
        assert status == 200
        # Admitted as soon as the tricklers fell behind (the grace, 0.2 s, after they were
        # admitted); a generous bound for a loaded machine, far below the 3 s wait and 503
        # that tricklers holding their reservations cause.
        assert took < 1.5, f"the honest body waited {took:.2f} s"
        assert budget.reserved == 0  # the honest body's reservation is back; the tricklers hold none
        assert not any(t.done() for t in tricklers)  # still trickling: nothing refused them
        for task in tricklers:
            task.cancel()
        await asyncio.gather(*tricklers, return_exceptions=True)
        assert budget.reserved == 0
        assert not budget._waiting

    asyncio.run(scenario())


def test_a_body_falling_behind_gives_its_reservation_back_at_once_waking_the_queue(trims: list[int]) -> None:
    """A body that stalls after its first share (inside the inactivity limit, 3 s here) is
    released on the timer, not when its next bytes come; a queued reservation is admitted then."""

    async def scenario() -> None:
        budget = MemoryBudget(MemoryBudget.cost_of(DECLARED), wait_s=3.0)
        app = paced_gate(budget, body_timeout=3.0)
        loop = asyncio.get_running_loop()
        stalled = asyncio.create_task(
            post(app, trickling(DECLARED // PROBATION_SHARE, every_s=2.5), DECLARED)
        )
        await asyncio.sleep(0.05)
        assert budget.reserved == budget.budget_bytes
        queued_at = loop.time()
        waiter = asyncio.create_task(budget.reserve(budget.budget_bytes or 0))
        assert await waiter
        woken = loop.time() - queued_at
        assert woken < 1.5, f"woken after {woken:.2f} s"  # on the timer, before its next byte (2.5 s)
        assert not stalled.done()
        stalled.cancel()
        await asyncio.gather(stalled, return_exceptions=True)
        assert budget.reserved == budget.budget_bytes  # the waiter's, not given back twice

    asyncio.run(scenario())


def test_a_slow_body_on_course_for_the_deadline_keeps_its_reservation(trims: list[int]) -> None:
    """2 MiB in ten pieces 0.15 s apart: 1.35 s, far slower than a local client, but on
    course to finish within the 5 s deadline; reserved from its first share to its answer."""

    async def scenario() -> None:
        budget = three_trickler_budget()
        held: list[int] = []
        answered_with: list[int] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            answered_with.append(budget.reserved)
            await ok_app(scope, receive, send)

        body = b" " * DECLARED
        reading = in_pieces(body, 10, 0.15, seen=lambda: held.append(budget.reserved))
        status, took = await post(paced_gate(budget, app), reading, len(body))
        assert status == 200
        assert took > 1.2
        cost = MemoryBudget.cost_of(DECLARED)
        assert held[1:] == [cost] * 9  # reserved after its first piece (its probation) until read
        assert answered_with == [cost]
        assert budget.reserved == 0

    asyncio.run(scenario())


def test_a_body_that_fell_behind_is_still_answered_reserving_once_read(
    trims: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Its first share, then a pause (0.6 s, inside the inactivity limit, past the grace): its
    reservation goes back while it waits; once the rest arrives it reserves its cost again,
    as a body without Content-Length does, and is answered."""

    async def scenario() -> None:
        budget = three_trickler_budget()
        during_pause: list[int] = []
        answered_with: list[int] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            answered_with.append(budget.reserved)
            await ok_app(scope, receive, send)

        parts = [b" " * (DECLARED // PROBATION_SHARE), b" " * (DECLARED - DECLARED // PROBATION_SHARE)]

        async def receive() -> Message:
            if len(parts) == 1:
                await asyncio.sleep(0.6)
                during_pause.append(budget.reserved)
            part = parts.pop(0)
            return chunk(part, more=bool(parts))

        assert (await post(paced_gate(budget, app), receive, DECLARED))[0] == 200
        assert during_pause == [0]
        assert answered_with == [MemoryBudget.cost_of(DECLARED)]
        assert budget.reserved == 0

    with caplog.at_level("INFO", logger="crop_yield.traffic"):
        asyncio.run(scenario())
    assert any("fell behind" in r.getMessage() for r in caplog.records)


class BufferedUpload:
    """A client whose body reaches the server in ``pieces`` pieces ``every_s`` apart, buffered
    as uvicorn buffers it: a read that a timer cancels loses nothing, the next one gets all
    that has arrived."""

    def __init__(self, body: bytes, pieces: int, every_s: float) -> None:
        size = -(-len(body) // pieces)
        self.buffer = b""
        self.left = len(body)
        self.arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        for i, start in enumerate(range(0, len(body), size)):
            loop.call_later(i * every_s, self._arrive, body[start : start + size])

    def _arrive(self, piece: bytes) -> None:
        self.buffer += piece
        self.arrived.set()

    async def receive(self) -> Message:
        await self.arrived.wait()
        piece, self.buffer = self.buffer, b""
        self.arrived.clear()
        self.left -= len(piece)
        return chunk(piece, more=self.left > 0)


def test_an_event_loop_stall_does_not_make_an_arrived_body_fall_behind(
    trims: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Another call holds the event loop for 0.6 s just after the body is admitted (past the
    0.2 s grace): the body's pieces keep arriving meanwhile, and when the loop is back they
    and the pace timer are ready at once. The bytes the server holds count: it keeps its
    reservation."""

    async def scenario() -> None:
        budget = three_trickler_budget()
        upload = BufferedUpload(b" " * DECLARED, pieces=64, every_s=0.01)  # 0.64 s, on course
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, time.sleep, 0.6)  # e.g. a large body being parsed
        assert (await post(paced_gate(budget), upload.receive, DECLARED))[0] == 200
        assert budget.reserved == 0

    with caplog.at_level("INFO", logger="crop_yield.traffic"):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if "fell behind" in r.getMessage()]
