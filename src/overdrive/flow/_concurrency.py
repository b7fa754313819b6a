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

# A round (one decision) lasts at least this many typical call latencies and
# this many calls that ran wholly under the current limit: enough for the
# per-token mean to settle, short enough to follow the upstream.
_ROUND_TRIPS = 2.0
_ROUND_CALLS = 8
# EWMA weight of one call in the typical latency (the round trip).
_TYPICAL_ALPHA = 0.1
# EWMA weight of a faster-than-baseline round in the baseline.
_BASELINE_FALL = 0.1
# Every so many rounds (the first time sooner), one round runs at a share of the
# limit to measure the baseline afresh; it enters the baseline with this weight.
_PROBE_FIRST = 5
_PROBE_EVERY = 20
_PROBE_SHARE = 0.75
_PROBE_WEIGHT = 0.5
# The deepest cut latency alone makes in one round.
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
    ...     limit = AdaptiveLimit(10, clock=clock)
    ...     held = [await limit.acquire() for _ in range(10)]  # the limit is in use
    ...     seen = []
    ...     for per_token in (0.01, 0.01, 0.02):  # flat, flat, then twice as slow
    ...         for _ in range(8):  # one round: 8 calls of 40 tokens, back to back
    ...             clock.advance(per_token * 40)
    ...             limit.record(per_token * 40, tokens=40)
    ...         seen.append(limit.limit)
    ...     clock.advance(1.0)
    ...     limit.record(2.0, outcome="dropped")  # a 429: back off
    ...     return seen + [limit.limit]
    >>> asyncio.run(main())
    [10, 11, 6, 5]
    """

    __slots__ = (
        "_baseline",
        "_estimate",
        "_last_drop",
        "_latest",
        "_probe_from",
        "_regime",
        "_round_calls",
        "_round_dropped",
        "_round_latency",
        "_round_opened",
        "_round_tokens",
        "_rounds_to_probe",
        "_typical",
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
        tolerance: float = 1.1,
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
        self._baseline: float | None = None
        self._latest: float | None = None
        self._typical = 0.0
        self._last_drop = -math.inf
        self._probe_from: float | None = None
        self._rounds_to_probe = _PROBE_FIRST
        self._regime = -math.inf
        self._open_round(-math.inf)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @limit.setter
    def limit(self, value: int) -> None:
        self._check_limit(value)
        self._probe_from = None
        self._step_to(float(value))

    @property
    def gradient(self) -> float:
        """``clamp(tolerance * baseline / latest, 0.5, 1.0)``; 1 before the first round."""
        if self._baseline is None or not self._latest:
            return 1.0
        ratio = self.tolerance * self._baseline / self._latest
        return min(1.0, max(_MIN_GRADIENT, ratio))

    def record(self, latency_s: float, *, tokens: int = 1, outcome: Outcome = "ok") -> None:
        """Take one finished call into account; ``"ignored"`` calls change nothing."""
        if outcome == "dropped":
            self._on_drop()
        elif outcome == "ok":
            latency_s = max(0.0, latency_s)
            self._observe(latency_s, max(tokens, 1))

    def _observe(self, latency: float, tokens: int) -> None:
        now = self._clock.now()
        self._typical += _TYPICAL_ALPHA * (latency - self._typical) if self._typical else latency
        # A call that started before the last move ran (partly) under the old
        # limit and says nothing about the new one.
        if now - latency < self._regime:
            return
        self._round_latency += latency
        self._round_tokens += tokens
        self._round_calls += 1
        if self._round_calls >= _ROUND_CALLS and now - self._round_opened >= (
            _ROUND_TRIPS * self._typical
        ):
            self._close_round(now)

    def _close_round(self, now: float) -> None:
        per_token = self._round_latency / self._round_tokens
        self._latest = per_token
        if self._probe_from is not None:
            self._end_probe(per_token)
            return
        self._learn_baseline(per_token)
        gradient = self.gradient
        self._rounds_to_probe -= 1
        if gradient < 1.0:
            # Congestion must clear fast: cut in proportion to the excess at once.
            self._step_to(self._estimate * gradient)
        elif not self._was_used() or self._round_dropped:
            self._open_round(now)
        elif self._rounds_to_probe <= 0:
            self._start_probe()
        else:
            self._step_to(self._estimate + self.smoothing * math.sqrt(self._estimate))

    def _learn_baseline(self, per_token: float) -> None:
        baseline = self._baseline
        if baseline is None:
            self._baseline = per_token
        elif per_token < baseline:
            # Faster than the baseline: the upstream got faster, or is less loaded.
            self._baseline = baseline + _BASELINE_FALL * (per_token - baseline)
        # Never up from a round at the operating limit: the limit sits where
        # latency is ``tolerance`` above the baseline, so learning from it would
        # ratchet baseline and limit up together. Only probes raise it.

    def _start_probe(self) -> None:
        self._rounds_to_probe = _PROBE_EVERY
        self._probe_from = self._estimate
        self._step_to(self._estimate * _PROBE_SHARE)

    def _end_probe(self, per_token: float) -> None:
        baseline = self._baseline if self._baseline is not None else per_token
        if per_token * self.tolerance < baseline:
            # Much faster below the limit: the limit is past the knee and the
            # baseline was measured there. Take the new one, probe again soon.
            self._baseline = per_token
            self._rounds_to_probe = _PROBE_FIRST
        else:
            self._baseline = baseline + _PROBE_WEIGHT * (per_token - baseline)
        back, self._probe_from = self._probe_from, None
        assert back is not None
        self._step_to(back)

    def _was_used(self) -> bool:
        return bool(self._waiters) or self._in_flight >= _USED_SHARE * self.limit

    def _on_drop(self) -> None:
        now = self._clock.now()
        self._round_dropped = True  # no growth in a round that saw a drop
        if now - self._last_drop < self.drop_window:
            return
        self._last_drop = now
        before, self._probe_from = self._probe_from or self._estimate, None
        self._step_to(before * self.backoff)

    def _step_to(self, estimate: float) -> None:
        now = self._clock.now()
        self._regime = now
        self._open_round(now)
        self._estimate = min(float(self.max_limit), max(float(self.min_limit), estimate))
        self._wake()

    def _open_round(self, now: float) -> None:
        self._round_opened = now
        self._round_latency = 0.0
        self._round_tokens = 0
        self._round_calls = 0
        self._round_dropped = False

    def __repr__(self) -> str:
        latency = "" if self._baseline is None else self._latency_repr()
        return (
            f"AdaptiveLimit(limit={self.limit}, in_flight={self._in_flight}, "
            f"waiting={self.waiting}, estimate={self._estimate:.2f}{latency})"
        )

    def _latency_repr(self) -> str:
        baseline, latest = self._baseline or 0.0, self._latest or 0.0
        return (
            f", baseline={baseline * 1e3:.3g}ms/tok, latest={latest * 1e3:.3g}ms/tok, "
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
