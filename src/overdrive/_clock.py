"""Injectable time.

Everything that reads time or waits for it takes a :class:`Clock`, so tests
step a :class:`FakeClock` instead of sleeping.

>>> clock = FakeClock()
>>> clock.advance(2.5)
>>> clock.now()
2.5
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Monotonic seconds plus a way to wait for them."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real monotonic clock; ``sleep`` is ``asyncio.sleep`` (timer based, no polling)."""

    __slots__ = ()

    # The C function itself, not a method wrapping it: the pipeline reads the
    # time a dozen times per call, and each Python frame would cost more than
    # the read.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that moves only when told; sleepers wake when time passes their deadline."""

    __slots__ = ("_now", "_order", "_sleepers")

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def run_for(self, seconds: float, step: float = 0.01) -> None:
        """Advance in small steps, letting woken tasks run between steps."""
        for _ in range(max(1, round(seconds / step))):
            self.advance(step)
            for _ in range(5):
                await asyncio.sleep(0)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, sleepers={self.sleepers})"
