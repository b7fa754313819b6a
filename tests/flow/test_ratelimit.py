from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from overdrive import FakeClock
from overdrive.flow import GCRA, RateLimiter


@given(
    rate=st.floats(0.5, 200),
    burst=st.floats(0.01, 5),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=60),
)
def test_gcra_never_exceeds_rate_plus_burst(rate: float, burst: float, gaps: list[float]) -> None:
    clock = FakeClock()
    limit = GCRA(rate, burst, clock)
    grants = []
    for gap in gaps:
        clock.advance(gap)
        grants.append(limit.reserve(1))
    grants.sort()
    allowance = max(burst, 1 / rate) * rate + 1e-6
    for i, start in enumerate(grants):
        # Grants inside any window of length w number at most w * rate + burst.
        for j in range(i, len(grants)):
            window = grants[j] - start
            assert j - i + 1 <= window * rate + allowance


def test_gcra_burst_then_even_spacing(clock: FakeClock) -> None:
    limit = GCRA(rate=10, burst=0.3, clock=clock)
    moments = [round(limit.reserve(1), 6) for _ in range(5)]
    assert moments == [0.0, 0.0, 0.0, 0.1, 0.2]


def test_large_cost_goes_when_bucket_is_full(clock: FakeClock) -> None:
    limit = GCRA(rate=10, burst=0.5, clock=clock)
    assert limit.reserve(100) == 0.0  # larger than the burst, but nothing is queued
    assert limit.reserve(1) > 9.0


async def test_acquire_waits_its_turn_in_order(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=60, tpm=None, burst=0.5, clock=clock)  # one per second
    order: list[int] = []

    async def call(i: int) -> None:
        await limiter.acquire(0)
        order.append(i)

    tasks = [asyncio.create_task(call(i)) for i in range(3)]
    await clock.run_for(0.1)
    assert order == [0]
    await clock.run_for(1.0)
    assert order == [0, 1]
    await clock.run_for(1.0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_hold_pushes_back_waiting_calls(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=600, tpm=None, burst=0.1, clock=clock)
    await limiter.acquire(0)
    limiter.hold(2.0)
    task = asyncio.create_task(limiter.acquire(0))
    await clock.run_for(1.9)
    assert not task.done()
    await clock.run_for(0.2)
    await task
    assert task.done()


async def test_token_refund_frees_capacity(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=None, tpm=600, burst=1.0, clock=clock)  # 10 tokens/s
    assert limiter.tokens is not None
    limiter.tokens.reserve(100)  # a call reserved 100 tokens ...
    limiter.refund(reserved=100, used=10)  # ... and used 10
    next_go = limiter.tokens.reserve(10)
    assert next_go <= 1.0 + 1e-9
