"""Slot keeping for concurrency limits: permits, waiting in arrival order, the shared base.

A call takes a slot before it goes and gives it back when it is done. Over the
limit a call waits on a future; waiters are woken in arrival order when a slot
frees or the limit grows, never by polling.

How the limit moves is a subclass's business: :class:`~overdrive.flow.FixedLimit`
never moves on its own, :class:`~overdrive.flow.AdaptiveLimit` follows latency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Literal

from .._clock import Clock, SystemClock
from .._validate import check_int

__all__ = ["ConcurrencyLimit", "Outcome", "Permit"]

Outcome = Literal["ok", "dropped", "ignored"]


class Permit:
    """One held slot; ``release`` gives it back and reports how the call went.

    Releasing twice is harmless: the second call does nothing.
    """

    __slots__ = ("_generation", "_limit", "_released", "_started")

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit = limit
        self._started = limit._clock.now()
        self._released = False
        self._generation = limit._generation

    @property
    def released(self) -> bool:
        return self._released

    def release(self, outcome: Outcome = "ok", *, tokens: int = 1) -> None:
        """Free the slot; ``tokens`` is the number of output tokens the call produced."""
        if self._released:
            return
        self._released = True
        limit = self._limit
        if self._generation != limit._generation:
            return  # taken on an event loop that is gone: forget_loop freed its slot
        limit._finish(limit._clock.now() - self._started, tokens, outcome)

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
    >>> from overdrive.flow import FixedLimit
    >>> async def main() -> int:
    ...     limit = FixedLimit(2)
    ...     async with limit.slot():
    ...         return limit.in_flight
    >>> asyncio.run(main())
    1
    """

    __slots__ = ("_clock", "_generation", "_in_flight", "_waiters", "max_limit", "min_limit")

    def __init__(self, *, min_limit: int, max_limit: int, clock: Clock | None) -> None:
        self.min_limit = check_int("min_limit", min_limit, 1)
        self.max_limit = check_int("max_limit", max_limit, min_limit)
        self._clock: Clock = clock or SystemClock()
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Bumped by forget_loop: permits taken before it no longer count.
        self._generation = 0

    @property
    def limit(self) -> int:
        raise NotImplementedError

    @limit.setter
    def limit(self, value: int) -> None:
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

    def acquire_now(self) -> Permit | None:
        """A slot at once if one is free and nobody waits, else None (book nothing)."""
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return Permit(self)
        return None

    async def acquire(self) -> Permit:
        """Wait for a slot (in arrival order) and return its :class:`Permit`."""
        permit = self.acquire_now()
        if permit is not None:
            return permit
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

    def forget_loop(self) -> None:
        """The event loop every call in flight or waiting ran on is gone: none are, now.

        A permit taken there and released after all (its loop ran again)
        frees nothing: its slot was freed here.
        """
        self._generation += 1
        self._in_flight = 0
        self._waiters.clear()

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

    def _check_limit(self, value: int) -> int:
        return check_int("limit", value, self.min_limit, self.max_limit)
