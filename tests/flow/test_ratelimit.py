from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive.flow import GCRA, LimitSpec, LocalLimiter
from overdrive.testing import FakeClock


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


async def test_local_limiter_refuses_without_booking(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=60, tpm=None, burst=1.0), clock)  # one per second
    assert await limiter.try_acquire(1, 0) == 0.0
    assert await limiter.try_acquire(1, 0) == pytest.approx(1.0)
    assert await limiter.try_acquire(1, 0) == pytest.approx(1.0)  # the refusal booked nothing
    clock.advance(1.0)
    assert await limiter.try_acquire(1, 0) == 0.0


async def test_both_dimensions_must_fit_or_neither_is_booked(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=600, tpm=600, burst=1.0), clock)  # 10/s each
    assert await limiter.try_acquire(1, 10) == 0.0  # the token bucket is now empty
    wait = await limiter.try_acquire(1, 5)
    assert wait == pytest.approx(0.5)
    assert limiter.requests is not None
    # The request dimension was not booked by the refused call: 9 more fit at once.
    assert [await limiter.try_acquire(1, 0) for _ in range(9)] == [0.0] * 9


async def test_hold_refuses_until_the_moment(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=6000, tpm=None, burst=1.0), clock)
    await limiter.hold(2.0)
    assert await limiter.try_acquire(1, 0) == pytest.approx(2.0)
    clock.advance(2.0)
    assert await limiter.try_acquire(1, 0) == 0.0


async def test_hold_applies_without_configured_limits(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=None, tpm=None, burst=0.5), clock)
    assert await limiter.try_acquire(1, 1000) == 0.0
    await limiter.hold(1.5)
    assert await limiter.try_acquire(1, 0) == pytest.approx(1.5)


async def test_adjust_gives_back_unused_tokens(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=None, tpm=600, burst=1.0), clock)  # 10 tokens/s
    assert await limiter.try_acquire(1, 100) == 0.0  # reserved 100 ...
    assert await limiter.try_acquire(1, 10) > 9.0
    await limiter.adjust(-90)  # ... and used 10
    assert await limiter.try_acquire(1, 10) == pytest.approx(1.0)  # one burst (10) used


async def test_set_spec_keeps_what_is_booked(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=60, tpm=None, burst=1.0), clock)
    assert await limiter.try_acquire(1, 0) == 0.0
    await limiter.set_spec(LimitSpec(rpm=120, tpm=None, burst=1.0))
    assert limiter.spec.rpm == 120
    # One request is still booked a second ahead; at 2/s the next fits at once.
    assert await limiter.try_acquire(1, 0) == 0.0
    assert await limiter.try_acquire(1, 0) == pytest.approx(0.5)
