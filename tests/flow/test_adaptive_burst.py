"""AdaptiveLimit's open start: a cold burst goes out at once, and only evidence closes the limit.

The upstream here is simulated on a fake clock: calls share its speed past a
hidden knee (or never slow, with no knee), so a test runs seconds of traffic
in milliseconds and never sleeps.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Sequence

import pytest

from overdrive.flow import AdaptiveLimit, ConcurrencyLimit, FixedLimit
from overdrive.flow._adaptive import _ROUND_CALLS
from overdrive.testing import FakeClock

TICK = 0.01


async def settle(rounds: int = 3) -> None:
    """Let every ready task run; fake time does not move."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Upstream:
    """Calls of ``work(tokens)`` seconds each, sharing the speed past ``knee`` calls in flight.

    With more than ``knee`` calls in flight each runs at ``(knee / n) ** 1.5``
    of full speed, so throughput peaks at the knee; with no knee, a call takes
    its work whatever the load.
    """

    def __init__(self, clock: FakeClock, knee: int | None = None) -> None:
        self.clock = clock
        self.knee = knee
        self.left: dict[asyncio.Future[None], float] = {}
        self.served = 0

    def speed(self) -> float:
        if self.knee is None:
            return 1.0
        return float(min(1.0, (self.knee / max(1, len(self.left))) ** 1.5))

    async def call(self, limit: ConcurrencyLimit, tokens: int) -> None:
        async with limit.slot() as permit:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.left[done] = 0.05 + 0.003 * tokens
            await done
            permit.release("ok", tokens=tokens)

    async def run_for(self, seconds: float, limit: ConcurrencyLimit | None = None) -> list[int]:
        """Move time on ``seconds``; the limit sampled every tenth of a second, if given."""
        seen = []
        for step in range(round(seconds / TICK)):
            self.clock.advance(TICK)
            self._progress(TICK * self.speed())
            await settle()
            if limit is not None and step % 10 == 0:
                seen.append(limit.limit)
        return seen

    def _progress(self, work: float) -> None:
        for done, left in list(self.left.items()):
            if left <= work:
                del self.left[done]
                done.set_result(None)
                self.served += 1
            else:
                self.left[done] = left - work


def burst(upstream: Upstream, limit: ConcurrencyLimit, calls: int) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(upstream.call(limit, 20)) for _ in range(calls)]


def closed_loop(
    upstream: Upstream, limit: ConcurrencyLimit, workers: int, seed: int = 3
) -> list[asyncio.Task[None]]:
    """``workers`` agents calling back to back, answers of 8..64 tokens."""
    rng = random.Random(seed)

    async def worker() -> None:
        while True:
            await upstream.call(limit, rng.randint(8, 64))

    return [asyncio.create_task(worker()) for _ in range(workers)]


async def stop(tasks: Sequence[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def makespan(upstream: Upstream, limit: ConcurrencyLimit, calls: int) -> float:
    started = upstream.clock.now()
    tasks = burst(upstream, limit, calls)
    while not all(task.done() for task in tasks):
        await upstream.run_for(TICK)
    return upstream.clock.now() - started


# -- a cold burst --------------------------------------------------------------------------


async def test_a_cold_limit_lets_a_burst_up_to_max_limit_through_at_once(clock: FakeClock) -> None:
    limit = AdaptiveLimit(16, clock=clock)
    assert limit.open
    permits = await asyncio.gather(*(limit.acquire() for _ in range(60)))
    assert (limit.in_flight, limit.waiting, limit.limit) == (60, 0, 60)
    for permit in permits:
        permit.release()
    capped = AdaptiveLimit(16, max_limit=32, clock=clock)
    waiters = [asyncio.create_task(capped.acquire()) for _ in range(50)]
    await settle()
    assert (capped.in_flight, capped.waiting, capped.limit) == (32, 18, 32)
    await stop(waiters)


async def test_a_cold_burst_is_as_fast_as_the_best_fixed_limit(clock: FakeClock) -> None:
    upstream = Upstream(clock)  # no knee: holding calls back gains nothing
    auto = await makespan(upstream, AdaptiveLimit(16, clock=clock), 60)
    fixed = await makespan(upstream, FixedLimit(64, clock=clock), 60)
    closed = await makespan(upstream, AdaptiveLimit(16, clock=clock, open_start=False), 60)
    assert auto == pytest.approx(fixed, abs=TICK)  # one call's latency: all went at once
    assert closed > 2 * auto  # the closed start sends the burst in waves


async def test_repeated_bursts_that_drain_stay_open_without_a_baseline(clock: FakeClock) -> None:
    upstream = Upstream(clock, knee=20)
    limit = AdaptiveLimit(16, clock=clock)
    for _ in range(6):
        await makespan(upstream, limit, 60)
        await upstream.run_for(1.0)  # the agent reads the answers
    # Slower at 60 in flight than the knee would be, but no history is no
    # evidence, and a cut would come after the burst it could have helped.
    assert limit.open
    assert limit.limit == 60


async def test_open_repr_says_so(clock: FakeClock) -> None:
    limit = AdaptiveLimit(2, clock=clock)
    await asyncio.gather(*(limit.acquire() for _ in range(3)))
    assert repr(limit) == "AdaptiveLimit(limit=3, in_flight=3, waiting=0, estimate=3.00, open)"


async def test_a_closed_start_keeps_to_initial(clock: FakeClock) -> None:
    limit = AdaptiveLimit(16, clock=clock, open_start=False)
    waiters = [asyncio.create_task(limit.acquire()) for _ in range(60)]
    await settle()
    assert (limit.open, limit.in_flight, limit.waiting) == (False, 16, 44)
    await stop(waiters)


# -- evidence closes it --------------------------------------------------------------------


@pytest.mark.parametrize("latency", [0.01, 30.0])  # a 429 at once, or a call that timed out
async def test_a_drop_closes_the_limit_backing_off_from_the_load(
    clock: FakeClock, latency: float
) -> None:
    limit = AdaptiveLimit(16, clock=clock)
    permits = await asyncio.gather(*(limit.acquire() for _ in range(40)))
    clock.advance(latency)
    permits[0].release("dropped")
    assert (limit.open, limit.limit) == (False, 36)  # 40 * backoff
    waiter = asyncio.create_task(limit.acquire())
    await settle()
    assert not waiter.done()  # 39 in flight, limit 36: it waits
    await stop([waiter])


async def test_setting_the_limit_by_hand_closes_it(clock: FakeClock) -> None:
    limit = AdaptiveLimit(16, clock=clock)
    limit.limit = 10
    waiters = [asyncio.create_task(limit.acquire()) for _ in range(12)]
    await settle()
    assert (limit.open, limit.in_flight, limit.waiting) == (False, 10, 2)
    await stop(waiters)


async def test_latency_rising_with_load_closes_the_limit(clock: FakeClock) -> None:
    upstream = Upstream(clock, knee=20)
    limit = AdaptiveLimit(16, clock=clock)
    light = closed_loop(upstream, limit, 8)  # below the knee: this is the baseline
    await upstream.run_for(10.0)
    assert limit.open
    heavy = closed_loop(upstream, limit, 120, seed=4)  # 128 agents now: far past the knee
    seen = await upstream.run_for(40.0, limit)
    await stop(light + heavy)
    assert not limit.open
    assert max(seen) >= 100  # the new load went out at once ...
    settled = sorted(seen[-200:])
    assert 17 <= statistics.median(settled) <= 25, seen  # ... and the limit found the knee
    assert settled[-1] <= 30, seen


async def test_a_lasting_load_with_no_baseline_is_measured_at_initial(clock: FakeClock) -> None:
    upstream = Upstream(clock, knee=20)
    limit = AdaptiveLimit(16, clock=clock)
    agents = closed_loop(upstream, limit, 128)
    await settle()
    assert limit.in_flight == 128  # the cold burst went out at once
    seen = await upstream.run_for(10.0, limit)
    served_at_10s = upstream.served
    seen += await upstream.run_for(40.0, limit)
    await stop(agents)
    assert not limit.open
    assert 16 in seen[:30], seen  # one round at ``initial`` measured the baseline
    settled = sorted(seen[100:])
    assert 17 <= statistics.median(settled) <= 25, seen
    best = 20 / (0.05 + 0.003 * 36)  # calls/s at the knee, answers of 36 tokens on average
    assert (upstream.served - served_at_10s) / 40 >= 0.9 * best


async def test_a_lasting_load_with_no_knee_opens_again(clock: FakeClock) -> None:
    upstream = Upstream(clock)
    limit = AdaptiveLimit(16, clock=clock)
    agents = closed_loop(upstream, limit, 64)
    seen = await upstream.run_for(20.0, limit)
    await stop(agents)
    # A round at 16 to measure the baseline: as fast as at 64, so open again.
    assert min(seen) == 16
    assert limit.open
    assert seen[-50:] == [64] * 50


async def test_the_first_round_after_a_cold_burst_is_not_a_baseline(clock: FakeClock) -> None:
    # The first calls pay for cold connections: a baseline from them would be too slow.
    limit = AdaptiveLimit(16, clock=clock)
    held = [await limit.acquire() for _ in range(4)]
    for _ in range(_ROUND_CALLS):
        clock.advance(1.0)
        limit.record(1.0, tokens=10)
    assert "baseline" not in repr(limit)
    for _ in range(_ROUND_CALLS):
        clock.advance(0.1)
        limit.record(0.1, tokens=10)
    assert "baseline=10ms/tok" in repr(limit)
    assert len(held) == limit.in_flight
