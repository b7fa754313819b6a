"""Token buckets for the simulated upstream's rpm/tpm limits.

Buckets refill continuously and read time from an injected :class:`Clock`, so
tests step a :class:`FakeClock` instead of sleeping.

>>> from overdrive.testing import FakeClock
>>> clock = FakeClock()
>>> bucket = TokenBucket(rate=1.0, capacity=2.0, clock=clock)
>>> bucket.take(2.0), bucket.wait_for(1.0)
(None, 1.0)
>>> clock.advance(1.0)
>>> bucket.wait_for(1.0)
0.0
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overdrive._clock import Clock

__all__ = ["RateLimiter", "Rejection", "TokenBucket"]

# Float refill maths lands a hair under whole numbers; do not reject for that.
_EPSILON = 1e-9

Headers = list[tuple[bytes, bytes]]


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled at ``rate`` tokens per second."""

    __slots__ = ("_clock", "_level", "_stamp", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, clock: Clock) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._stamp = clock.now()

    @property
    def level(self) -> float:
        """Tokens available now."""
        now = self._clock.now()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` tokens are available; 0.0 when they are now.

        An amount above ``capacity`` never fits; the answer is then when the
        refill would have covered it, which is what a client can be told.
        """
        missing = amount - self.level
        return 0.0 if missing <= _EPSILON else missing / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` tokens; callers check :meth:`wait_for` first."""
        self._level = self.level - amount

    def take_into_debt(self, amount: float) -> None:
        """Remove ``amount`` even below zero, down to minus one full bucket."""
        self._level = max(-self.capacity, self.level - amount)

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate

    def fill(self) -> None:
        self._level = self.capacity
        self._stamp = self._clock.now()

    def __repr__(self) -> str:
        return f"TokenBucket(level={self.level:.2f}, capacity={self.capacity}, rate={self.rate})"


class Rejection:
    """Why a request was refused: which limit, how long to wait, the headers to send."""

    __slots__ = ("kind", "limit", "needed", "wait_s")

    def __init__(self, kind: str, limit: int, needed: int, wait_s: float) -> None:
        self.kind = kind  # "requests" or "tokens", as in OpenAI's error type
        self.limit = limit
        self.needed = needed
        self.wait_s = wait_s

    def retry_headers(self) -> Headers:
        seconds = max(1, math.ceil(self.wait_s))
        millis = max(1, math.ceil(self.wait_s * 1000))
        return [(b"retry-after", b"%d" % seconds), (b"retry-after-ms", b"%d" % millis)]

    def __repr__(self) -> str:
        return f"Rejection({self.kind}, limit={self.limit}, wait_s={self.wait_s:.3f})"


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets, global to one server.

    A request is admitted only if both buckets can pay. By default a refused
    request pays nothing, so retrying at the advertised time succeeds. With
    ``charge_rejected`` a refused request still costs one request, as
    providers document ("unsuccessful requests contribute to your per-minute
    limit"): a client that keeps resending digs itself deeper, down to one
    bucket's worth of debt.
    """

    __slots__ = ("_charge_rejected", "_requests", "_rpm", "_tokens", "_tpm")

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        burst_s: float,
        clock: Clock,
        charge_rejected: bool = False,
    ) -> None:
        self._charge_rejected = charge_rejected
        self._rpm = rpm
        self._tpm = tpm
        self._requests = _bucket(rpm, burst_s, clock)
        self._tokens = _bucket(tpm, burst_s, clock)

    def admit(self, tokens: int) -> Rejection | None:
        """Charge one request and ``tokens``, or say why not (charging nothing)."""
        rejection = self._shortfall(tokens)
        if rejection is None:
            if self._requests is not None:
                self._requests.take(1)
            if self._tokens is not None:
                self._tokens.take(tokens)
        elif self._charge_rejected and self._requests is not None:
            self._requests.take_into_debt(1)
        return rejection

    def _shortfall(self, tokens: int) -> Rejection | None:
        request_wait = self._requests.wait_for(1) if self._requests is not None else 0.0
        token_wait = self._tokens.wait_for(tokens) if self._tokens is not None else 0.0
        if request_wait <= 0.0 and token_wait <= 0.0:
            return None
        if request_wait >= token_wait:
            return Rejection("requests", self._rpm or 0, 1, request_wait)
        return Rejection("tokens", self._tpm or 0, tokens, token_wait)

    def headers(self) -> Headers:
        """The ``x-ratelimit-*`` headers describing the buckets now."""
        headers: Headers = []
        if self._requests is not None:
            headers += _bucket_headers(b"requests", self._rpm or 0, self._requests)
        if self._tokens is not None:
            headers += _bucket_headers(b"tokens", self._tpm or 0, self._tokens)
        return headers

    def capacity(self, kind: str) -> float:
        bucket = self._requests if kind == "requests" else self._tokens
        return bucket.capacity if bucket is not None else math.inf

    def fill(self) -> None:
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.fill()

    def __repr__(self) -> str:
        return f"RateLimiter(requests={self._requests!r}, tokens={self._tokens!r})"


def _bucket(per_minute: int | None, burst_s: float, clock: Clock) -> TokenBucket | None:
    if per_minute is None:
        return None
    rate = per_minute / 60.0
    # At least one unit fits, or a low rpm would refuse every request forever.
    return TokenBucket(rate, max(1.0, rate * burst_s), clock)


def _bucket_headers(kind: bytes, limit: int, bucket: TokenBucket) -> Headers:
    reset = f"{round(bucket.until_full(), 3):g}s".encode()
    return [
        (b"x-ratelimit-limit-" + kind, b"%d" % limit),
        (b"x-ratelimit-remaining-" + kind, b"%d" % max(0, math.floor(bucket.level))),
        (b"x-ratelimit-reset-" + kind, reset),
    ]
