from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive._clock import FakeClock
from overdrive._errors import ConfigError
from overdrive.flow._concurrency import (
    AdaptiveLimit,
    ConcurrencyLimit,
    FixedLimit,
    Outcome,
    Permit,
)


async def settle(rounds: int = 5) -> None:
    """Let every ready task run; fake time does not move."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def hold(limit: ConcurrencyLimit, count: int) -> list[Permit]:
    return [await limit.acquire() for _ in range(count)]


def feed(
    clock: FakeClock, limit: AdaptiveLimit, per_token: float, tokens: int = 100, times: int = 40
) -> None:
    """Record ``times`` successful calls of ``tokens`` tokens at ``per_token`` s/token."""
    for _ in range(times):
        clock.advance(per_token * tokens)  # one call after the other
        limit.record(per_token * tokens, tokens=tokens, outcome="ok")


# -- slots and waiting ---------------------------------------------------------------------


async def test_waiters_are_woken_in_arrival_order() -> None:
    limit = FixedLimit(1)
    first = await limit.acquire()
    order: list[int] = []

    async def call(i: int) -> None:
        async with limit.slot():
            order.append(i)

    tasks = [asyncio.create_task(call(i)) for i in range(5)]
    await settle()
    assert limit.waiting == 5
    assert order == []
    first.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert (limit.in_flight, limit.waiting) == (0, 0)


async def test_growing_the_limit_wakes_waiters_without_a_release() -> None:
    limit = FixedLimit(1)
    await limit.acquire()
    tasks = [asyncio.create_task(limit.acquire()) for _ in range(3)]
    await settle()
    limit.limit = 3
    await settle()
    assert [t.done() for t in tasks] == [True, True, False]
    assert (limit.in_flight, limit.waiting) == (3, 1)
    tasks[2].cancel()
    await settle()


async def test_shrinking_the_limit_lets_held_slots_drain_first() -> None:
    limit = FixedLimit(3)
    permits = await hold(limit, 3)
    limit.limit = 1
    waiter = asyncio.create_task(limit.acquire())
    permits[0].release()
    permits[1].release()
    await settle()
    assert not waiter.done()
    permits[2].release()
    await settle()
    assert waiter.done()
    assert limit.in_flight == 1


async def test_cancelled_waiter_is_removed() -> None:
    limit = FixedLimit(1)
    permit = await limit.acquire()
    doomed = asyncio.create_task(limit.acquire())
    after = asyncio.create_task(limit.acquire())
    await settle()
    doomed.cancel()
    await settle()
    assert doomed.cancelled()
    assert limit.waiting == 1
    permit.release()
    await settle()
    assert after.done()
    assert limit.in_flight == 1


async def test_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    limit = FixedLimit(1)
    permit = await limit.acquire()
    doomed = asyncio.create_task(limit.acquire())
    after = asyncio.create_task(limit.acquire())
    await settle()
    permit.release()  # hands the slot to `doomed` ...
    doomed.cancel()  # ... which is cancelled before it runs
    await settle()
    assert doomed.cancelled()
    assert after.done()
    assert (limit.in_flight, limit.waiting) == (1, 0)


async def test_release_is_idempotent() -> None:
    limit = FixedLimit(2)
    permit = await limit.acquire()
    permit.release()
    permit.release()
    assert permit.released
    assert limit.in_flight == 0


Step = tuple[str, int, Outcome, float]
OUTCOMES: list[Outcome] = ["ok", "ok", "dropped", "ignored"]
ops = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "acquire", "release", "cancel", "release_cancel"]),
        st.integers(0, 50),
        st.sampled_from(OUTCOMES),
        st.floats(0.0, 2.0),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(initial=st.integers(1, 6), script=ops)
def test_slots_never_exceed_the_limit(initial: int, script: list[Step]) -> None:
    asyncio.run(_play(initial, script))


async def _play(initial: int, script: list[Step]) -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(initial, max_limit=8, clock=clock, drop_window=0.5)
    pending: list[asyncio.Task[Permit]] = []
    held: list[Permit] = []
    granted: list[asyncio.Task[Permit]] = []
    for op, index, outcome, dt in script:
        clock.advance(dt)
        before = len(granted)
        _apply(op, index, outcome, limit, pending, held)
        await settle()
        for task in [t for t in pending if t.done()]:
            pending.remove(task)
            if not task.cancelled():
                held.append(task.result())
                granted.append(task)
        if len(granted) > before:
            assert limit.in_flight <= limit.limit
        assert limit.in_flight == len(held)
        assert limit.waiting == len(pending)
        # No slot stays idle while someone waits.
        assert not pending or limit.in_flight >= limit.limit
    for task in pending:
        task.cancel()
    await settle()


def _apply(
    op: str,
    index: int,
    outcome: Outcome,
    limit: AdaptiveLimit,
    pending: list[asyncio.Task[Permit]],
    held: list[Permit],
) -> None:
    if op == "acquire":
        pending.append(asyncio.create_task(limit.acquire()))
    elif op == "cancel" and pending:
        pending[index % len(pending)].cancel()
    elif op in ("release", "release_cancel") and held:
        permit = held.pop(index % len(held))
        permit.release(outcome)

        if op == "release_cancel" and pending:
            pending[0].cancel()  # possibly the waiter the slot was just handed to


async def test_granted_order_is_fifo_under_load(clock: FakeClock) -> None:
    limit = AdaptiveLimit(2, clock=clock)
    order: list[int] = []

    async def call(i: int) -> None:
        async with limit.slot() as permit:
            order.append(i)
            await clock.sleep(0.1)
            permit.release("ok", tokens=10)

    tasks = [asyncio.create_task(call(i)) for i in range(30)]
    await settle()
    await clock.run_for(5.0, step=0.05)
    await asyncio.gather(*tasks)
    assert order == list(range(30))


# -- adaptive estimate ---------------------------------------------------------------------


async def test_limit_grows_when_saturated_and_per_token_latency_flat(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 8)
    feed(clock, limit, per_token=0.01)
    assert limit.limit > 8


async def test_limit_does_not_grow_when_idle(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 2)
    feed(clock, limit, per_token=0.01, times=200)
    assert limit.limit == 8


async def test_limit_shrinks_when_per_token_latency_rises(clock: FakeClock) -> None:
    limit = AdaptiveLimit(32, clock=clock)
    await hold(limit, 32)
    feed(clock, limit, per_token=0.01, times=20)
    before = limit.limit
    feed(clock, limit, per_token=0.04, times=20)
    assert limit.limit < before * 0.7


async def test_calls_from_before_a_cut_do_not_cut_again(clock: FakeClock) -> None:
    limit = AdaptiveLimit(32, clock=clock)
    await hold(limit, 32)
    feed(clock, limit, per_token=0.01, times=20)
    before = limit.limit
    clock.advance(4.0)
    # Ten slow calls that all ran through the same overload end together.
    limit.record(4.0, tokens=100)
    after_first = limit.limit
    for _ in range(9):
        limit.record(4.0, tokens=100)
    assert limit.limit == after_first < before


async def test_longer_answers_at_the_same_per_token_latency_do_not_shrink(
    clock: FakeClock,
) -> None:
    limit = AdaptiveLimit(32, clock=clock)
    await hold(limit, 32)
    feed(clock, limit, per_token=0.01, tokens=50, times=20)
    before = limit.limit
    feed(clock, limit, per_token=0.01, tokens=1000, times=20)  # 20x the latency per call
    assert limit.limit >= before
    assert limit.gradient == 1.0


async def test_zero_token_answers_count_as_one_token(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 8)
    limit.record(0.5, tokens=0)
    assert "long=500ms/tok" in repr(limit)


async def test_burst_of_drops_in_one_window_shrinks_once(clock: FakeClock) -> None:
    limit = AdaptiveLimit(20, clock=clock, drop_window=1.0)
    for _ in range(10):
        limit.record(2.0, outcome="dropped")
        clock.advance(0.05)
    assert limit.limit == 18
    clock.advance(1.0)
    limit.record(2.0, outcome="dropped")
    assert limit.limit == 16


async def test_ignored_outcomes_do_not_move_the_estimate(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 8)
    state = repr(limit)
    for latency in (0.001, 50.0):
        limit.record(latency, tokens=3, outcome="ignored")
    assert repr(limit) == state


async def test_slot_reports_timeouts_as_drops_and_other_errors_as_ignored(
    clock: FakeClock,
) -> None:
    limit = AdaptiveLimit(10, clock=clock)
    with pytest.raises(ValueError, match="client"):
        async with limit.slot():
            raise ValueError("client error")
    assert limit.limit == 10
    with pytest.raises(TimeoutError):
        async with limit.slot():
            raise TimeoutError
    assert limit.limit == 9
    assert limit.in_flight == 0


async def test_bounds_are_respected(clock: FakeClock) -> None:
    limit = AdaptiveLimit(4, min_limit=2, max_limit=10, clock=clock, drop_window=0.0)
    backlog = [asyncio.create_task(limit.acquire()) for _ in range(20)]
    await settle()
    seen = []
    for _ in range(100):
        feed(clock, limit, per_token=0.01, times=1)
        seen.append(limit.limit)
    assert max(seen) == limit.limit == 10
    for _ in range(50):
        limit.record(1.0, outcome="dropped")
    assert limit.limit == 2
    feed(clock, limit, per_token=1.0, times=50)
    assert limit.limit == 2
    for task in backlog:
        task.cancel()
    await settle()


@pytest.mark.parametrize("value", [0, 1, 11, 2.5, True])
def test_limit_setter_is_validated(value: object) -> None:
    limit = AdaptiveLimit(4, min_limit=2, max_limit=10)
    with pytest.raises(ConfigError) as caught:
        limit.limit = value  # type: ignore[assignment]
    assert caught.value.field == "limit"
    assert limit.limit == 4


def test_limit_setter_moves_the_estimate() -> None:
    limit = AdaptiveLimit(4, max_limit=10)
    limit.limit = 10
    assert limit.limit == 10
    with pytest.raises(ConfigError, match="limit"):
        FixedLimit(3).limit = 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": 300}, "initial"),
        ({"min_limit": 0}, "min_limit"),
        ({"initial": 2, "min_limit": 4, "max_limit": 3}, "max_limit"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"tolerance": 0.9}, "tolerance"),
        ({"backoff": 1.2}, "backoff"),
        ({"backoff": 0}, "backoff"),
        ({"drop_window": -1.0}, "drop_window"),
        ({"smoothing": float("nan")}, "smoothing"),
    ],
)
def test_constructor_is_validated(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AdaptiveLimit(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_fixed_limit_never_moves(clock: FakeClock) -> None:
    limit = FixedLimit(5, clock=clock)
    await hold(limit, 5)
    for outcome in ("ok", "dropped", "ignored"):
        for latency in (0.01, 10.0):
            limit.record(latency, tokens=10, outcome=outcome)
    assert limit.limit == 5
    assert repr(limit) == "FixedLimit(limit=5, in_flight=5, waiting=0)"


async def test_repr_shows_live_state(clock: FakeClock) -> None:
    limit = AdaptiveLimit(2, clock=clock)
    await hold(limit, 2)
    waiter = asyncio.create_task(limit.acquire())
    await settle()
    assert repr(limit) == "AdaptiveLimit(limit=2, in_flight=2, waiting=1, estimate=2.00)"
    limit.record(0.2, tokens=10)
    assert "long=20ms/tok, short=20ms/tok, gradient=1.00" in repr(limit)
    waiter.cancel()
    await settle()


# -- simulation ----------------------------------------------------------------------------


class CongestingUpstream:
    """Serves calls token by token, sharing its speed among all calls in flight.

    Per-token latency is flat up to ``knee`` concurrent calls and climbs
    steeply above it, so pushing more calls in lowers total throughput.
    """

    def __init__(self, knee: int = 20, base: float = 0.002) -> None:
        self.knee = knee
        self.base = base
        self.remaining: dict[asyncio.Future[None], float] = {}

    def per_token(self, active: int) -> float:
        return self.base * (1 + max(0, active - self.knee)) ** 2

    async def call(self, tokens: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.remaining[done] = float(tokens)
        await done

    def tick(self, dt: float) -> None:
        progress = dt / self.per_token(len(self.remaining))
        for done, left in list(self.remaining.items()):
            if left <= progress:
                del self.remaining[done]
                done.set_result(None)
            else:
                self.remaining[done] = left - progress


async def test_adaptive_limit_settles_near_the_upstream_knee(clock: FakeClock) -> None:
    upstream = CongestingUpstream(knee=20)
    limit = AdaptiveLimit(4, clock=clock)
    rng = random.Random(3)

    async def worker() -> None:
        while True:
            async with limit.slot() as permit:
                tokens = rng.randint(20, 400)  # answer lengths vary a lot
                await upstream.call(tokens)
                permit.release("ok", tokens=tokens)

    workers = [asyncio.create_task(worker()) for _ in range(120)]  # a steady backlog
    seen: list[int] = []
    for step in range(30_000):  # 300 s of fake time
        clock.advance(0.01)
        upstream.tick(0.01)
        await settle(3)
        if step % 100 == 0:
            seen.append(limit.limit)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)

    settled = seen[100:]
    assert min(settled) >= 10, seen
    assert max(settled) <= 40, seen
    assert max(seen[:20]) > 4  # it did climb from the start
