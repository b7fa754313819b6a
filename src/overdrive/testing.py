"""Helpers for testing code that runs on overdrive, without waiting for real time.

Everything in overdrive that reads time or waits for it takes a ``clock``
(:class:`Clock`: ``now()`` and ``async sleep()``). Hand it a
:class:`FakeClock` and step time yourself: TTLs expire, rate limits refill
and deadlines pass in microseconds of real time.

>>> import asyncio
>>> from overdrive.testing import FakeClock
>>> clock = FakeClock()
>>> async def nap() -> float:
...     task = asyncio.ensure_future(clock.sleep(30))
...     await asyncio.sleep(0)          # the sleeper is waiting on the fake clock
...     clock.advance(30)               # thirty seconds pass at once
...     await task
...     return clock.now()
>>> asyncio.run(nap())
30.0

The engine takes one too: ``Overdrive(config, clock=clock)``; so do
``Batcher``, ``ResourcePool``, ``Alerts`` and the cache tiers (``wall=clock.now``
stands in for the wall clock the shared tiers store expiry times on).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from ._clock import Clock

__all__ = ["Clock", "FakeClock"]


class FakeClock:
    """A clock that moves only when told; sleepers wake when time passes their deadline.

    >>> clock = FakeClock(start=100.0)
    >>> clock.advance(2.5)
    >>> clock.now()
    102.5
    >>> clock
    FakeClock(now=102.500, sleepers=0)
    """

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
        """How many sleepers are still waiting (cancelled ones not counted)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, sleepers={self.sleepers})"
