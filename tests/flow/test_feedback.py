from __future__ import annotations

import pytest

from overdrive.flow import LimitSpec, LocalLimiter, apply_feedback
from overdrive.flow._feedback import RateLimitHeaders, parse_reset
from overdrive.testing import FakeClock


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3s", 3723.0), ("0.5", 0.5), ("2", 2.0)],
)
def test_reset_formats(text: str, seconds: float) -> None:
    assert parse_reset(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "1s and more", None])
def test_unreadable_reset_is_none(text: str | None) -> None:
    assert parse_reset(text) is None


def test_pause_is_one_call_not_a_full_refill() -> None:
    report = RateLimitHeaders(limit=600, remaining=0, reset=60.0)
    assert report.pause(1) == pytest.approx(0.1)  # room for one request, not the whole minute
    assert RateLimitHeaders(limit=None, remaining=0, reset=0.3).pause(1) == pytest.approx(0.3)
    assert RateLimitHeaders(limit=600, remaining=3, reset=60.0).pause(1) == 0.0


async def test_exhausted_bucket_pauses_the_limiter(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=600, tpm=None, burst=1.0), clock)
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "5s",
    }
    assert await apply_feedback(limiter, headers, tokens_cost=10)
    assert await limiter.try_acquire(1, 0) == pytest.approx(0.1)


async def test_token_exhaustion_pauses_for_this_calls_cost(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=None, tpm=60_000, burst=1.0), clock)
    headers = {
        "x-ratelimit-limit-tokens": "60000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    await apply_feedback(limiter, headers, tokens_cost=500)
    assert await limiter.try_acquire(1, 0) == pytest.approx(0.5)  # 500 tokens at 1000/s


async def test_a_lower_reported_limit_is_adopted(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=1200, tpm=None, burst=0.5), clock)
    headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "500"}
    assert await apply_feedback(limiter, headers, tokens_cost=1)
    assert limiter.spec.rpm == 600
    assert limiter.spec.tpm is None
    # A higher figure (e.g. a daily limit) never raises what was configured.
    headers["x-ratelimit-limit-requests"] = "10000"
    assert not await apply_feedback(limiter, headers, tokens_cost=1)
    assert limiter.spec.rpm == 600


async def test_an_unconfigured_limit_is_learnt(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=None, tpm=None, burst=0.5), clock)
    await apply_feedback(limiter, {"x-ratelimit-limit-tokens": "90000"}, tokens_cost=1)
    assert limiter.spec.tpm == 90_000


async def test_garbage_headers_change_nothing(clock: FakeClock) -> None:
    limiter = LocalLimiter(LimitSpec(rpm=600, tpm=None, burst=0.5), clock)
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "-",
        "x-ratelimit-reset-requests": "whenever",
    }
    assert not await apply_feedback(limiter, headers, tokens_cost=1)
    assert limiter.spec.rpm == 600
    assert await limiter.try_acquire(1, 0) == 0.0
