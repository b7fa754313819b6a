from __future__ import annotations

import pytest

from overdrive.sim._limits import RateLimiter, TokenBucket
from overdrive.testing import FakeClock


def test_bucket_refills_continuously_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    bucket.take(4.0)
    assert bucket.level == 0.0
    assert bucket.wait_for(1.0) == pytest.approx(0.5)
    clock.advance(0.25)
    assert bucket.level == pytest.approx(0.5)
    clock.advance(10.0)
    assert bucket.level == 4.0
    assert bucket.until_full() == 0.0


def test_bucket_tells_when_an_oversized_amount_would_be_covered() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=2.0, clock=clock)
    assert bucket.wait_for(5.0) == pytest.approx(3.0)
    bucket.fill()
    assert "level=2.00" in repr(bucket)


def test_limiter_admits_until_empty_then_waits_for_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=120, tpm=None, burst_s=1.0, clock=clock)  # 2/s, holds 2
    assert limiter.admit(0) is None
    assert limiter.admit(0) is None
    rejection = limiter.admit(0)
    assert rejection is not None
    assert rejection.kind == "requests"
    assert rejection.wait_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.admit(0) is None


def test_low_rpm_still_holds_one_request() -> None:
    limiter = RateLimiter(rpm=1, tpm=None, burst_s=1.0, clock=FakeClock())
    assert limiter.admit(0) is None
    rejection = limiter.admit(0)
    assert rejection is not None
    assert rejection.wait_s == pytest.approx(60.0)


def test_rejected_request_charges_neither_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, tpm=600, burst_s=1.0, clock=clock)  # 10 req, 10 tokens
    rejection = limiter.admit(11)
    assert rejection is not None
    assert rejection.kind == "tokens"
    assert rejection.wait_s == pytest.approx(0.1)
    headers = dict(limiter.headers())
    assert headers[b"x-ratelimit-remaining-requests"] == b"10"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"10"
    assert limiter.admit(10) is None
    headers = dict(limiter.headers())
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"0"
    assert headers[b"x-ratelimit-reset-tokens"] == b"1s"


def test_retry_headers_round_up() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=60, burst_s=5.0, clock=clock)  # 1 token/s, holds 5
    assert limiter.admit(3) is None
    rejection = limiter.admit(3)
    assert rejection is not None
    assert dict(rejection.retry_headers()) == {b"retry-after": b"1", b"retry-after-ms": b"1000"}
    clock.advance(0.75)
    rejection = limiter.admit(3)
    assert rejection is not None
    assert dict(rejection.retry_headers()) == {b"retry-after": b"1", b"retry-after-ms": b"250"}
    rejection = limiter.admit(6)  # more than the bucket holds: when the refill covers it
    assert rejection is not None
    assert dict(rejection.retry_headers()) == {b"retry-after": b"4", b"retry-after-ms": b"3250"}


def test_fill_restores_both_buckets() -> None:
    limiter = RateLimiter(rpm=60, tpm=60, burst_s=2.0, clock=FakeClock())
    assert limiter.admit(2) is None
    assert limiter.admit(1) is not None
    limiter.fill()
    assert limiter.admit(2) is None
    assert "RateLimiter(" in repr(limiter)


def test_charged_rejections_dig_the_bucket_deeper(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=60, tpm=None, burst_s=1.0, clock=clock, charge_rejected=True)
    assert limiter.admit(0) is None
    refused = [limiter.admit(0) for _ in range(3)]  # three resends while empty
    assert all(r is not None for r in refused)
    clock.advance(1.0)  # one second of refill only pays the debt back
    assert limiter.admit(0) is not None


def test_free_rejections_by_default(clock: FakeClock) -> None:
    limiter = RateLimiter(rpm=60, tpm=None, burst_s=1.0, clock=clock)
    assert limiter.admit(0) is None
    for _ in range(3):
        assert limiter.admit(0) is not None
    clock.advance(1.0)
    assert limiter.admit(0) is None
