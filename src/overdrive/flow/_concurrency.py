"""Concurrency limits for one upstream: how many calls may be in flight at once.

A call takes a slot before it goes and gives it back when it is done. Over the
limit a call waits on a future; waiters are woken in arrival order when a slot
frees or the limit grows, never by polling.

:class:`AdaptiveLimit` moves the limit with what it measures, gradient style:

* every finished call gives a latency sample, normalised per output token
  (``latency / max(tokens, 1)``) so that long answers do not look like
  congestion;
* a slow EWMA of those samples is the baseline (``long``), a fast EWMA the
  current state (``short``);
* ``gradient = clamp(tolerance * long / short, 0.5, 1.0)``: 1 while latency is
  near the baseline, lower as queues build up in the upstream;
* ``target = limit * gradient + allowance``; the allowance, ``sqrt(limit)``
  while latency is flat, lets the limit probe upwards, and fades to nothing as
  the gradient falls to its floor so heavy congestion can halve the limit;
* the limit moves at most once per round trip (a call that started before the
  last move ran under the old limit), within bounds: a cut takes the whole
  step so congestion clears fast, growth moves ``smoothing`` of the way and
  only when the limit was actually used, so an idle upstream does not inflate it;
* a ``"dropped"`` outcome (429, timeout) multiplies it by ``backoff``, at most
  once per ``drop_window`` seconds, so one congestion event that fails many
  calls at once costs one step, not many.

:class:`FixedLimit` has the same interface and never moves on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections import deque
from types import TracebackType
from typing import Literal

from .._clock import Clock, SystemClock
from .._errors import ConfigError

__all__ = ["AdaptiveLimit", "ConcurrencyLimit", "FixedLimit", "Outcome", "Permit"]

Outcome = Literal["ok", "dropped", "ignored"]

# EWMA weights of one sample. The short term follows within a few calls; the
# baseline needs a couple of hundred calls to move, so a sustained overload is
# not quickly taken for the new normal.
_SHORT_ALPHA = 0.3
_LONG_ALPHA = 0.005
# When the short term sits below the baseline the upstream got faster; the
# baseline follows it quickly so the gradient does not stay pinned at 1.
_LONG_FALL_ALPHA = 0.1
_MIN_GRADIENT = 0.5
# The limit counts as used when this share of it was in flight.
_USED_SHARE = 0.8


class Permit:
    """One held slot; ``release`` gives it back and reports how the call went.

    Releasing twice is harmless: the second call does nothing.
    """

    __slots__ = ("_limit", "_released", "_started")

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit = limit
        self._started = limit._clock.now()
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self, outcome: Outcome = "ok", *, tokens: int = 1) -> None:
        """Free the slot; ``tokens`` is the number of output tokens the call produced."""
        if self._released:
            return
        self._released = True
        latency = self._limit._clock.now() - self._started
        self._limit._finish(latency, tokens, outcome)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Permit({state}, since={self._started:.3f})"


class _Slot:
    """``async with limit.slot() as permit``: acquire on entry, release on exit.

    Release inside the block to pass the token count; otherwise the exit
    reports ``"ok"``, ``"dropped"`` for a ``TimeoutError`` and ``"ignored"``
    for any other exception (cancellation included).
    """

    __slots__ = ("_limit", "_permit")

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit = limit
        self._permit: Permit | None = None

    async def __aenter__(self) -> Permit:
        self._permit = await self._limit.acquire()
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._permit is not None
        self._permit.release(_outcome_of(exc))


def _outcome_of(exc: BaseException | None) -> Outcome:
    if exc is None:
        return "ok"
    return "dropped" if isinstance(exc, TimeoutError) else "ignored"


class ConcurrencyLimit:
    """The slot keeping shared by every limit; subclasses decide how ``limit`` moves.

    >>> import asyncio
    >>> async def main() -> int:
    ...     limit = FixedLimit(2)
    ...     async with limit.slot():
    ...         return limit.in_flight
    >>> asyncio.run(main())
    1
    """

    __slots__ = ("_clock", "_in_flight", "_waiters", "max_limit", "min_limit")

    def __init__(self, *, min_limit: int, max_limit: int, clock: Clock | None) -> None:
        _check_int("min_limit", min_limit, 1)
        _check_int("max_limit", max_limit, min_limit)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self._clock: Clock = clock or SystemClock()
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        raise NotImplementedError

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def slot(self) -> _Slot:
        """An async context manager holding one slot for the block."""
        return _Slot(self)

    async def acquire(self) -> Permit:
        """Wait for a slot (in arrival order) and return its :class:`Permit`."""
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return Permit(self)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        return Permit(self)

    def record(self, latency_s: float, *, tokens: int = 1, outcome: Outcome = "ok") -> None:
        """Take one finished call into account; :meth:`Permit.release` calls this."""

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            return
        # The slot was handed over just before the cancellation: pass it on.
        self._in_flight -= 1
        self._wake()

    def _finish(self, latency: float, tokens: int, outcome: Outcome) -> None:
        # Recorded while the call still counts as in flight, so the estimate
        # sees how busy the limit was when the call ended.
        self.record(latency, tokens=tokens, outcome=outcome)
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiters, oldest first; the slot is counted at hand-over."""
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._in_flight += 1
            waiter.set_result(None)

    def _check_limit(self, value: int) -> None:
        _check_int("limit", value, self.min_limit)
        if value > self.max_limit:
            raise ConfigError("limit", f"must be at most max_limit={self.max_limit}, got {value}")


class FixedLimit(ConcurrencyLimit):
    """A limit that moves only when set; ``record`` changes nothing.

    >>> FixedLimit(4)
    FixedLimit(limit=4, in_flight=0, waiting=0)
    """

    __slots__ = ("_limit",)

    def __init__(self, limit: int, *, clock: Clock | None = None) -> None:
        super().__init__(min_limit=1, max_limit=sys.maxsize, clock=clock)
        self._check_limit(limit)
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._check_limit(value)
        self._limit = value
        self._wake()

    def __repr__(self) -> str:
        return (
            f"FixedLimit(limit={self._limit}, in_flight={self._in_flight}, waiting={self.waiting})"
        )


class AdaptiveLimit(ConcurrencyLimit):
    """A limit that follows per-token latency and drop signals (see the module docstring).

    >>> import asyncio
    >>> from overdrive._clock import FakeClock
    >>> async def main() -> list[int]:
    ...     clock = FakeClock()
    ...     limit = AdaptiveLimit(4, clock=clock)
    ...     held = [await limit.acquire() for _ in range(4)]  # the limit is in use
    ...     seen = []
    ...     for _ in range(3):
    ...         clock.advance(0.4)  # one round trip
    ...         limit.record(0.4, tokens=40)  # 10 ms per token, flat: probe upwards
    ...         seen.append(limit.limit)
    ...     limit.record(2.0, outcome="dropped")  # a 429: back off
    ...     return seen + [limit.limit]
    >>> asyncio.run(main())
    [4, 4, 5, 4]
    """

    __slots__ = (
        "_estimate",
        "_last_drop",
        "_last_move",
        "_long",
        "_short",
        "backoff",
        "drop_window",
        "smoothing",
        "tolerance",
    )

    def __init__(
        self,
        initial: int = 16,
        *,
        min_limit: int = 1,
        max_limit: int = 256,
        clock: Clock | None = None,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        backoff: float = 0.9,
        drop_window: float = 1.0,
    ) -> None:
        super().__init__(min_limit=min_limit, max_limit=max_limit, clock=clock)
        try:
            self._check_limit(initial)
        except ConfigError as error:
            raise ConfigError("initial", error.problem) from None
        _check_float("smoothing", smoothing, low=0.0, high=1.0, open_low=True)
        _check_float("tolerance", tolerance, low=1.0, high=math.inf)
        _check_float("backoff", backoff, low=0.0, high=1.0, open_low=True)
        _check_float("drop_window", drop_window, low=0.0, high=math.inf)
        self.smoothing = smoothing
        self.tolerance = tolerance
        self.backoff = backoff
        self.drop_window = drop_window
        self._estimate = float(initial)
        self._long: float | None = None
        self._short = 0.0
        self._last_drop = -math.inf
        self._last_move = -math.inf

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @limit.setter
    def limit(self, value: int) -> None:
        self._check_limit(value)
        self._move_to(float(value))

    @property
    def gradient(self) -> float:
        """``clamp(tolerance * long / short, 0.5, 1.0)``; 1 before any sample."""
        if self._long is None or self._short <= 0.0:
            return 1.0
        ratio = self.tolerance * self._long / self._short
        return min(1.0, max(_MIN_GRADIENT, ratio))

    def record(self, latency_s: float, *, tokens: int = 1, outcome: Outcome = "ok") -> None:
        """Take one finished call into account; ``"ignored"`` calls change nothing."""
        if outcome == "dropped":
            self._on_drop()
        elif outcome == "ok":
            latency_s = max(0.0, latency_s)
            self._observe(latency_s / max(tokens, 1))
            self._adjust(started=self._clock.now() - latency_s)

    def _observe(self, per_token: float) -> None:
        if self._long is None:
            self._long = self._short = per_token
            return
        self._short += _SHORT_ALPHA * (per_token - self._short)
        self._long += _LONG_ALPHA * (per_token - self._long)
        if self._short < self._long:
            self._long += _LONG_FALL_ALPHA * (self._short - self._long)

    def _adjust(self, started: float) -> None:
        current = self._estimate
        gradient = self.gradient
        # The allowance fades out as the gradient nears its floor: with a full
        # sqrt(limit) a small limit could never be pushed below 4 by latency.
        allowance = math.sqrt(current) * (gradient - _MIN_GRADIENT) / (1.0 - _MIN_GRADIENT)
        target = current * gradient + allowance
        # One move per round trip: a call that started before the last move
        # ran under the old limit and says nothing about the new one. Without
        # this, the calls draining from one overload would cut again and
        # again, and growth would compound faster than latency can answer.
        if started < self._last_move:
            return
        if target < current:
            # Congestion must clear fast: cuts take the whole step.
            self._step_to(target)
        elif self._was_used():
            self._step_to(current + self.smoothing * (target - current))

    def _step_to(self, estimate: float) -> None:
        self._last_move = self._clock.now()
        self._move_to(estimate)

    def _was_used(self) -> bool:
        return bool(self._waiters) or self._in_flight >= _USED_SHARE * self.limit

    def _on_drop(self) -> None:
        now = self._clock.now()
        if now - self._last_drop < self.drop_window:
            return
        self._last_drop = now
        self._step_to(self._estimate * self.backoff)

    def _move_to(self, estimate: float) -> None:
        self._estimate = min(float(self.max_limit), max(float(self.min_limit), estimate))
        self._wake()

    def __repr__(self) -> str:
        per_token = "" if self._long is None else self._latency_repr()
        return (
            f"AdaptiveLimit(limit={self.limit}, in_flight={self._in_flight}, "
            f"waiting={self.waiting}, estimate={self._estimate:.2f}{per_token})"
        )

    def _latency_repr(self) -> str:
        assert self._long is not None
        return (
            f", long={self._long * 1e3:.3g}ms/tok, short={self._short * 1e3:.3g}ms/tok, "
            f"gradient={self.gradient:.2f}"
        )


def _check_int(field: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(field, f"must be at least {low}, got {value}")


def _check_float(
    field: str, value: float, *, low: float, high: float, open_low: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(field, f"must be a number, got {value!r}")
    if value < low or (open_low and value == low) or value > high:
        bracket = "(" if open_low else "["
        raise ConfigError(field, f"must be in {bracket}{low:g}, {high:g}], got {value}")
