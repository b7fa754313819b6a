from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive._errors import ConfigError
from overdrive.flow._adaptive import _PROBE_EVERY, _PROBE_FIRST, _PROBE_SHARE, _ROUND_CALLS
from overdrive.flow._concurrency import (
    AdaptiveLimit,
    ConcurrencyLimit,
    FixedLimit,
    Outcome,
    Permit,
)
from overdrive.testing import FakeClock


async def settle(rounds: int = 5) -> None:
    """Let every ready task run; fake time does not move."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def hold(limit: ConcurrencyLimit, count: int) -> list[Permit]:
    return [await limit.acquire() for _ in range(count)]


def feed(
    clock: FakeClock,
    limit: AdaptiveLimit,
    per_token: float,
    tokens: int = 100,
    rounds: float = 1,
) -> None:
    """Record ``rounds`` decision rounds of calls of ``tokens`` tokens at ``per_token`` s/token.

    The calls come one after the other, each starting a moment after the previous ended,
    so a round spans many round trips: growth takes its largest step.
    """
    for _ in range(round(rounds * _ROUND_CALLS)):
        clock.advance(0.001)
        clock.advance(per_token * tokens)
        limit.record(per_token * tokens, tokens=tokens, outcome="ok")


Saturated = Callable[..., Awaitable[AdaptiveLimit]]


@pytest.fixture
async def saturated(clock: FakeClock) -> AsyncIterator[Saturated]:
    """Make adaptive limits with a backlog of waiters, so they always count as used.

    Unless ``fresh``, the limit has seen 10 ms a token for a while (past its
    first probe) and is then set back to ``initial``: settled, out of slow start.
    The limits start closed: these tests follow the gradient, not the open start
    (tests/flow/test_adaptive_burst.py has that).
    """
    backlog: list[asyncio.Task[Permit]] = []

    async def make(initial: int, *, fresh: bool = False, smoothing: float = 0.2) -> AdaptiveLimit:
        limit = AdaptiveLimit(initial, clock=clock, open_start=False, smoothing=smoothing)
        backlog.extend(asyncio.create_task(limit.acquire()) for _ in range(300))
        await settle()
        if not fresh:
            feed(clock, limit, per_token=0.01, rounds=_PROBE_FIRST + 1)
            limit.limit = initial
        return limit

    yield make
    for task in backlog:
        task.cancel()
    await settle()


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
    limit = AdaptiveLimit(8, clock=clock, open_start=False)
    await hold(limit, 8)
    seen = []
    for _ in range(5):
        feed(clock, limit, per_token=0.01)
        seen.append(limit.limit)
    # The first round only warms up; the third is the first probe, at 3/4 of the limit.
    assert seen[0] == 8
    assert seen[1] > 8
    assert seen[2] < seen[1]
    assert seen[4] > seen[3] == seen[1]


async def test_slow_start_until_the_first_cut_then_back_halfway_then_step_by_step(
    clock: FakeClock, saturated: Saturated
) -> None:
    limit = await saturated(16, fresh=True, smoothing=0.1)
    seen = []
    for _ in range(6):
        feed(clock, limit, per_token=0.01)
        seen.append(limit.limit)
    # A warm-up round, then +1/4 a round (the third round is the first probe).
    assert seen == [16, 20, 15, 20, 25, 31]
    feed(clock, limit, per_token=0.02)  # pushed back: cut
    assert limit.limit == 25
    after = []
    for _ in range(4):
        feed(clock, limit, per_token=0.01)
        after.append(limit.limit)
    # Half the way back to where the cut came from, then step by step.
    assert after[:2] == [28, 30]
    assert 0 < after[3] - after[2] < 0.2 * after[2]


async def test_limit_does_not_grow_when_idle(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 2)
    feed(clock, limit, per_token=0.01, rounds=12)
    assert limit.limit == 8


async def test_latency_within_the_tolerance_does_not_cut(
    clock: FakeClock, saturated: Saturated
) -> None:
    limit = await saturated(32)
    feed(clock, limit, per_token=0.01)
    before = limit.limit
    feed(clock, limit, per_token=0.0108)  # 8% up: not congestion yet
    assert limit.limit >= before
    assert limit.gradient == 1.0


async def test_calls_of_a_few_milliseconds_are_not_judged_for_congestion(
    clock: FakeClock, saturated: Saturated
) -> None:
    # 100 tokens at 20 us: 2 ms calls, like a zero-latency upstream on loopback.
    limit = await saturated(32, fresh=True)
    feed(clock, limit, per_token=0.00002, rounds=_PROBE_FIRST + 1)
    limit.limit = before = 32
    feed(clock, limit, per_token=0.00006)  # 3x slower, still 6 ms: our own loop, not theirs
    assert limit.limit >= before
    feed(clock, limit, per_token=0.0006)  # 60 ms calls are judged again: cut
    assert limit.limit < before


@pytest.mark.parametrize("slower", [1.2, 1.32, 1.65, 3.0])
async def test_cut_is_in_proportion_to_the_excess(
    clock: FakeClock, saturated: Saturated, slower: float
) -> None:
    limit = await saturated(40)
    feed(clock, limit, per_token=0.01 * slower)
    # tolerance 1.1: 1.2x -> 11/12 of the limit, 1.32x -> 5/6; the first cut in a
    # row goes no deeper than 4/5, however slow the round.
    assert limit.gradient == pytest.approx(max(0.5, min(1.0, 1.1 / slower)))
    first = max(0.8, 1.1 / slower)
    assert limit.limit == int(40 * first)
    limit.limit = 40
    feed(clock, limit, per_token=0.01 * slower)
    feed(clock, limit, per_token=0.01 * slower)
    # In a row, the cuts take the whole gradient, down to 1/2 a round.
    assert limit.limit == int(int(40 * first) * max(0.5, 1.1 / slower))


async def test_one_slow_round_cuts_mildly_and_is_undone(
    clock: FakeClock, saturated: Saturated
) -> None:
    limit = await saturated(40, smoothing=0.01)  # growth of its own: < 1 a round
    feed(clock, limit, per_token=0.03)  # one round 3x slower: a stall, say
    assert limit.limit == 32
    seen = []
    for _ in range(3):
        feed(clock, limit, per_token=0.01)
        seen.append(limit.limit)
    assert seen == [36, 38, 39]  # half the way back each round


async def test_calls_from_before_a_cut_do_not_cut_again(
    clock: FakeClock, saturated: Saturated
) -> None:
    limit = await saturated(32)
    feed(clock, limit, per_token=0.01)
    feed(clock, limit, per_token=0.02)  # congestion: cut once
    after_cut = limit.limit
    assert after_cut < 32
    for _ in range(3 * _ROUND_CALLS):
        # Slow calls that started before the cut, ending after it.
        clock.advance(0.01)
        limit.record(30.0, tokens=100)
    assert limit.limit == after_cut
    feed(clock, limit, per_token=0.01)  # calls under the new limit are fine: grow again
    assert limit.limit > after_cut


async def test_longer_answers_at_the_same_per_token_latency_do_not_shrink(
    clock: FakeClock,
    saturated: Saturated,
) -> None:
    limit = await saturated(32)
    feed(clock, limit, per_token=0.01, tokens=50, rounds=2)
    before = limit.limit
    feed(clock, limit, per_token=0.01, tokens=1000, rounds=2)  # 20x the latency per call
    assert limit.limit >= before
    assert limit.gradient == 1.0


async def test_a_fixed_cost_per_call_is_not_taken_for_congestion(
    clock: FakeClock, saturated: Saturated
) -> None:
    """300 ms to the first token + 10 ms a token: short answers cost more per token."""
    limit = await saturated(32, fresh=True)
    rng = random.Random(5)

    def calls(count: int, shortest: int, longest: int) -> None:
        for _ in range(count):
            tokens = rng.randint(shortest, longest)
            clock.advance(0.3 + 0.01 * tokens)
            limit.record(0.3 + 0.01 * tokens, tokens=tokens)

    calls(4 * _ROUND_CALLS, 10, 300)
    before = limit.limit
    # Only short answers now: plain latency / tokens would double, but the upstream
    # is just as fast, so the limit must not shrink.
    calls(4 * _ROUND_CALLS, 10, 30)
    assert limit.limit >= before
    assert "fixed=30tok" in repr(limit)  # the 300 ms are worth 30 tokens


async def test_zero_token_answers_count_as_one_token(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 8)
    for _ in range(2 * _ROUND_CALLS):  # the first round only warms up
        clock.advance(0.5)
        limit.record(0.5, tokens=0)
    assert "baseline=500ms/tok" in repr(limit)


async def test_probe_rounds_remeasure_the_baseline_below_the_limit(
    clock: FakeClock, saturated: Saturated
) -> None:
    limit = await saturated(20, fresh=True, smoothing=0.01)  # grows < 1 a round: stays 20
    limit.limit = 20  # set by hand: no slow start
    seen = []  # the limit during each round
    for _ in range(_PROBE_FIRST + _PROBE_EVERY + 3):
        seen.append(limit.limit)
        feed(clock, limit, per_token=0.01)
    # A warm-up round; after _PROBE_FIRST rounds one at a share of the limit, straight
    # back; then every _PROBE_EVERY rounds.
    first = 1 + _PROBE_FIRST
    assert [i for i, value in enumerate(seen) if value < 20] == [first, first + _PROBE_EVERY + 1]
    assert seen[first] == int(20 * _PROBE_SHARE)
    assert seen[first + 1] == 20


def knee_latency(limit: AdaptiveLimit, knee: int) -> float:
    """Per-token latency of an upstream that slows past ``knee`` calls in flight."""
    return 0.01 * float(max(1.0, limit.limit / knee) ** 1.5)


async def test_starting_past_the_knee_probes_down_to_it(
    clock: FakeClock, saturated: Saturated
) -> None:
    # At 64 the upstream (knee 8) is already 8x slower: the first baseline is
    # wrong, and only measuring lower down can tell.
    limit = await saturated(64, fresh=True)
    seen = []
    for _ in range(60):
        feed(clock, limit, per_token=knee_latency(limit, 8))
        seen.append(limit.limit)
    assert max(seen[10:20]) <= 12, seen  # down from 64 within 10 rounds
    last = sorted(seen[-20:])
    assert 8 <= last[len(last) // 2] <= 10, seen  # the median sits at the knee
    assert last[0] >= int(7 * _PROBE_SHARE), seen  # probes dip to 3/4 of the limit, no lower
    assert last[-1] <= 12, seen


async def test_upstream_slower_for_everyone_becomes_the_new_baseline(
    clock: FakeClock, saturated: Saturated
) -> None:
    limit = await saturated(32)
    feed(clock, limit, per_token=0.01, rounds=2)
    before = limit.limit
    seen = []
    for _ in range(8):
        feed(clock, limit, per_token=0.02)  # twice as slow, whatever the limit
        seen.append(limit.limit)
    # A mild cut, a deep one; latency did not follow them down, so no third: it
    # takes the new latency as the baseline and grows back.
    assert abs(seen[0] - before * 0.8) <= 1
    assert seen[0] * 0.55 - 1 <= seen[1] < seen[0]
    assert seen[2] == seen[1]
    assert seen[-1] > seen[0]
    assert limit.gradient == 1.0


async def test_burst_of_drops_in_one_window_shrinks_once(clock: FakeClock) -> None:
    limit = AdaptiveLimit(20, clock=clock, drop_window=1.0)
    for _ in range(10):
        limit.record(2.0, outcome="dropped")
        clock.advance(0.05)
    assert limit.limit == 18
    clock.advance(1.0)
    limit.record(2.0, outcome="dropped")
    assert limit.limit == 16


DropSignal = Callable[[AdaptiveLimit], None]


def rejected(limit: AdaptiveLimit) -> None:
    limit.record(0.01, outcome="dropped")  # a 429 or 503 answered at once


def timed_out(limit: AdaptiveLimit) -> None:
    limit.record(30.0, outcome="dropped")  # a call that hung until its timeout


@pytest.mark.parametrize("drop", [rejected, timed_out])
async def test_a_storm_of_drops_shrinks_the_limit_and_it_recovers_after(
    clock: FakeClock, saturated: Saturated, drop: DropSignal
) -> None:
    limit = await saturated(24)

    def run(seconds: float, storm: bool) -> list[int]:
        seen = []
        for step in range(round(seconds / 0.05)):
            clock.advance(0.05)
            limit.record(0.05, tokens=5)  # calls that do get through are fast
            if storm and step % 2 == 0:
                drop(limit)
            seen.append(limit.limit)
        return seen

    run(5.0, storm=False)
    before = limit.limit
    during = run(10.0, storm=True)
    assert during == sorted(during, reverse=True)  # no growth while drops keep coming
    assert during[-1] <= before * 0.4  # about 0.9 ** 10
    after = run(30.0, storm=False)
    assert after[-1] >= before


async def test_ignored_outcomes_do_not_move_the_estimate(clock: FakeClock) -> None:
    limit = AdaptiveLimit(8, clock=clock)
    await hold(limit, 8)
    state = repr(limit)
    for latency in (0.001, 50.0):
        for _ in range(2 * _ROUND_CALLS):
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
    for _ in range(40):
        feed(clock, limit, per_token=0.01)
        seen.append(limit.limit)
    assert max(seen) == limit.limit == 10
    for _ in range(50):
        limit.record(1.0, outcome="dropped")
    assert limit.limit == 2
    feed(clock, limit, per_token=1.0, rounds=5)
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
    limit = AdaptiveLimit(2, clock=clock, open_start=False)
    await hold(limit, 2)
    waiter = asyncio.create_task(limit.acquire())
    await settle()
    assert repr(limit) == "AdaptiveLimit(limit=2, in_flight=2, waiting=1, estimate=2.00)"
    feed(clock, limit, per_token=0.02, tokens=10, rounds=2)  # warm-up, then one to grow
    assert repr(limit).endswith(
        "estimate=3.13, baseline=20ms/tok, latest=20ms/tok, fixed=0tok, gradient=1.00)"
    )
    waiter.cancel()
    await settle()


# -- simulation ----------------------------------------------------------------------------


class HiddenCapacity:
    """An upstream that shares its speed among the calls in flight past a hidden knee.

    A call's work is a fixed 50 ms plus 3 ms per token; up to ``knee`` calls
    run at full speed, more run at ``(knee / n) ** 1.5`` of it each, so total
    throughput peaks at ``knee`` calls and falls past it.
    """

    def __init__(self, knee: int) -> None:
        self.knee = knee
        self.remaining: dict[asyncio.Future[None], float] = {}
        self.served = 0

    def speed(self) -> float:
        return float(min(1.0, (self.knee / max(1, len(self.remaining))) ** 1.5))

    async def call(self, tokens: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.remaining[done] = 0.05 + 0.003 * tokens
        await done

    def tick(self, dt: float) -> None:
        progress = dt * self.speed()
        for done, left in list(self.remaining.items()):
            if left <= progress:
                del self.remaining[done]
                done.set_result(None)
                self.served += 1
            else:
                self.remaining[done] = left - progress


async def test_adaptive_limit_settles_near_the_upstream_knee(clock: FakeClock) -> None:
    upstream = HiddenCapacity(knee=20)
    limit = AdaptiveLimit(4, clock=clock)
    rng = random.Random(3)

    async def worker() -> None:
        while True:
            async with limit.slot() as permit:
                tokens = rng.randint(8, 64)  # answer lengths vary
                await upstream.call(tokens)
                permit.release("ok", tokens=tokens)

    workers = [asyncio.create_task(worker()) for _ in range(100)]  # a steady backlog
    seen: list[int] = []
    served_at_30s = 0
    for step in range(9_000):  # 90 s of fake time
        clock.advance(0.01)
        upstream.tick(0.01)
        await settle(3)
        if step % 100 == 0:
            seen.append(limit.limit)
        if step == 3_000:
            served_at_30s = upstream.served
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)

    assert max(seen[:8]) > 10  # it climbed from 4 within 8 s
    settled = sorted(seen[30:])
    assert 18 <= settled[len(settled) // 2] <= 24, seen  # the median sits at the knee
    assert settled[0] >= 14, seen  # probes dip to 3/4 of the limit, no lower
    assert settled[-1] <= 25, seen
    best = 20 / (0.05 + 0.003 * 36)  # calls/s at the knee, answers of 36 tokens on average
    assert (upstream.served - served_at_30s) / 60 >= 0.9 * best
