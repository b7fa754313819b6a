"""Pacing kept in local memory: GCRA per dimension (requests, tokens).

GCRA keeps one number per dimension, the theoretical arrival time (TAT): the
moment the bucket would be empty again. A cost fits when booking it would put
the TAT no further than ``burst`` seconds ahead of now. The admission queue
asks :meth:`LocalLimiter.try_acquire` for the call at its head and, when the
answer is "not yet", sleeps exactly that long: no polling, and the upstream
sees a smooth stream that never exceeds the limit.
"""

from __future__ import annotations

import math

from .._clock import Clock, SystemClock
from ._limiter import LimitSpec

__all__ = ["GCRA", "LocalLimiter"]

_EPSILON = 1e-9


class GCRA:
    """Generic cell rate algorithm for one dimension (requests or tokens).

    ``rate`` units per second; up to ``burst`` seconds of rate may go at once.

    >>> from overdrive.testing import FakeClock
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

    def wait_for(self, cost: float, now: float | None = None) -> float:
        """Seconds until ``cost`` units would fit (at ``now``, else the clock's); books nothing."""
        if now is None:
            now = self._clock.now()
        # Conditional expressions, not max(): every admitted call comes here twice.
        span = cost * self.interval
        tat = (self._tat if self._tat > now else now) + span
        wait = tat - (self.burst if self.burst > span else span) - now
        # Rounding must not turn "fits now" into a wait of 1e-17 s, forever.
        return wait if wait > _EPSILON else 0.0

    def reserve(self, cost: float, now: float | None = None) -> float:
        """Book ``cost`` units; return the moment (clock time) they may be used."""
        if now is None:
            now = self._clock.now()
        span = cost * self.interval
        tat = self._tat = (self._tat if self._tat > now else now) + span
        # A cost larger than the burst goes once the bucket is full again.
        usable = tat - (self.burst if self.burst > span else span)
        return usable if usable > now else now

    def adjust(self, delta: float) -> None:
        """Add (or with a negative ``delta``, give back) units already booked."""
        self._tat = max(self._tat + delta * self.interval, self._clock.now())

    def carry_from(self, other: GCRA) -> None:
        """Take over the units ``other`` had booked ahead of now, at this rate."""
        now = self._clock.now()
        units_ahead = max(0.0, other._tat - now) / other.interval
        self._tat = max(self._tat, now + units_ahead * self.interval)

    def __repr__(self) -> str:
        ahead = self._tat - self._clock.now()
        return (
            f"GCRA(rate={1 / self.interval:g}/s, burst={self.burst:g}s, booked_ahead={ahead:.3f}s)"
        )


class LocalLimiter:
    """A :class:`~overdrive.flow.Limiter` kept in this process's memory.

    >>> import asyncio
    >>> from overdrive.testing import FakeClock
    >>> limiter = LocalLimiter(LimitSpec(rpm=60, tpm=None, burst=1.0), FakeClock())
    >>> [asyncio.run(limiter.try_acquire(1, 0)) for _ in range(2)]
    [0.0, 1.0]
    """

    __slots__ = ("_clock", "_held_until", "requests", "spec", "tokens")

    def __init__(self, spec: LimitSpec, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._held_until = -math.inf
        self.spec = spec
        self.requests: GCRA | None = None
        self.tokens: GCRA | None = None
        self._build(spec)

    async def try_acquire(self, requests: int, tokens: int) -> float:
        return self.try_now(requests, tokens)

    def try_now(self, requests: int, tokens: int) -> float:
        """The synchronous body of :meth:`try_acquire`."""
        now = self._clock.now()  # once for both dimensions
        wait = self._held_until - now
        by_requests, by_tokens = self.requests, self.tokens
        if by_requests is not None and requests > 0:
            wait = max(wait, by_requests.wait_for(requests, now))
        if by_tokens is not None and tokens > 0:
            wait = max(wait, by_tokens.wait_for(tokens, now))
        if wait > 0.0:
            return wait
        if by_requests is not None and requests > 0:
            by_requests.reserve(requests, now)
        if by_tokens is not None and tokens > 0:
            by_tokens.reserve(tokens, now)
        return 0.0

    async def adjust(self, tokens: int) -> None:
        if self.tokens is not None and tokens:
            self.tokens.adjust(tokens)

    async def hold(self, seconds: float) -> None:
        moment = self._clock.now() + seconds
        self._held_until = max(self._held_until, moment)

    async def set_spec(self, spec: LimitSpec) -> None:
        old = (self.requests, self.tokens)
        self._build(spec)
        # Keep what is booked: the new buckets start where the old ones stood.
        for new, was in zip((self.requests, self.tokens), old, strict=True):
            if new is not None and was is not None:
                new.carry_from(was)
        self.spec = spec

    async def close_idle(self) -> None:
        return None  # nothing of it is bound to a loop

    def forget_loop(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _build(self, spec: LimitSpec) -> None:
        clock = self._clock
        self.requests = GCRA(spec.rpm / 60, spec.burst, clock) if spec.rpm else None
        self.tokens = GCRA(spec.tpm / 60, spec.burst, clock) if spec.tpm else None

    def __repr__(self) -> str:
        return f"LocalLimiter({self.spec!r}, requests={self.requests!r}, tokens={self.tokens!r})"
