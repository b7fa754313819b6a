"""Pacing: GCRA rate limits that make a call wait for its turn instead of failing.

Each call reserves its slot at once (the theoretical arrival time moves on by
its cost) and then sleeps until the slot comes, so callers go in arrival
order, are woken by a timer rather than by polling, and the upstream sees a
smooth stream that never exceeds the limit.
"""

from __future__ import annotations

from .._clock import Clock, SystemClock

__all__ = ["GCRA", "RateLimiter"]


class GCRA:
    """Generic cell rate algorithm for one dimension (requests or tokens).

    ``rate`` units per second; up to ``burst`` seconds of rate may go at once.

    >>> from overdrive._clock import FakeClock
    >>> limit = GCRA(rate=2.0, burst=0.5, clock=FakeClock())
    >>> [limit.reserve(1) for _ in range(3)]
    [0.0, 0.5, 1.0]
    """

    __slots__ = ("_clock", "_tat", "burst", "interval")

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.interval = 1.0 / rate
        # At least one unit must fit, or nothing could ever go.
        self.burst = max(burst, self.interval)
        self._clock = clock
        self._tat = clock.now()

    def reserve(self, cost: float) -> float:
        """Book ``cost`` units; return the moment (clock time) they may be used."""
        now = self._clock.now()
        tat = max(self._tat, now) + cost * self.interval
        self._tat = tat
        # A cost larger than the burst goes once the bucket is full again.
        return max(now, tat - max(self.burst, cost * self.interval))

    def adjust(self, delta: float) -> None:
        """Add (or with a negative ``delta``, give back) units already booked."""
        self._tat = max(self._tat + delta * self.interval, self._clock.now())

    def hold_until(self, moment: float) -> None:
        """Book nothing before ``moment`` (the upstream told us to wait)."""
        self._tat = max(self._tat, moment + self.burst - self.interval)

    def __repr__(self) -> str:
        ahead = self._tat - self._clock.now()
        return (
            f"GCRA(rate={1 / self.interval:g}/s, burst={self.burst:g}s, booked_ahead={ahead:.3f}s)"
        )


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits of one upstream.

    ``await limiter.acquire(tokens)`` returns when the call may go.
    """

    __slots__ = ("_clock", "_held_until", "requests", "tokens")

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        burst: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self.requests = GCRA(rpm / 60, burst, self._clock) if rpm else None
        self.tokens = GCRA(tpm / 60, burst, self._clock) if tpm else None
        self._held_until = 0.0

    async def acquire(self, tokens: int) -> float:
        """Wait for a slot for one request of ``tokens``; return the seconds waited."""
        start = self._clock.now()
        moment = self._reserve(tokens)
        while moment > self._clock.now():
            await self._clock.sleep(moment - self._clock.now())
            # A 429 seen while we slept may have pushed the whole queue back.
            moment = max(moment, self._held_until)
        return self._clock.now() - start

    def refund(self, reserved: int, used: int) -> None:
        """Correct a token reservation once the response reports what was used."""
        if self.tokens is not None and used != reserved:
            self.tokens.adjust(used - reserved)

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (an upstream 429 said so)."""
        moment = self._clock.now() + seconds
        self._held_until = max(self._held_until, moment)
        for limit in (self.requests, self.tokens):
            if limit is not None:
                limit.hold_until(moment)

    def _reserve(self, tokens: int) -> float:
        moment = self._held_until
        if self.requests is not None:
            moment = max(moment, self.requests.reserve(1))
        if self.tokens is not None and tokens > 0:
            moment = max(moment, self.tokens.reserve(tokens))
        return moment

    def __repr__(self) -> str:
        return f"RateLimiter(requests={self.requests!r}, tokens={self.tokens!r})"
