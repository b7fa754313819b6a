"""Single-flight: identical requests already in flight share one result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Runs ``work`` once per key at a time; later callers with that key join it.

    The shared work runs in its own task and is shielded, so a caller that is
    cancelled does not cancel the call others are waiting on. When the last
    caller waiting on it is cancelled, nobody wants the answer any more, and
    the work is cancelled too (its upstream slot and tokens are not spent).

    >>> async def main() -> int:
    ...     flight: Coalescer[int] = Coalescer()
    ...     async def work() -> int:
    ...         return 42
    ...     value, joined = await flight.run("k", work)
    ...     return value
    >>> asyncio.run(main())
    42
    """

    __slots__ = ("_in_flight", "_waiters", "joined", "led")

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, asyncio.Future[T]] = {}
        self._waiters: dict[asyncio.Future[T], int] = {}
        self.led = 0
        self.joined = 0

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(result, joined)``; ``joined`` is True when another caller led."""
        task = self._in_flight.get(key)
        joined = task is not None
        if task is None:
            self.led += 1
            task = asyncio.ensure_future(work())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        else:
            self.joined += 1
        return await self._wait(task), joined

    async def _wait(self, task: asyncio.Future[T]) -> T:
        self._waiters[task] = self._waiters.get(task, 0) + 1
        try:
            return await asyncio.shield(task)
        finally:
            left = self._waiters[task] - 1
            if left:
                self._waiters[task] = left
            else:
                del self._waiters[task]
                if not task.done():
                    task.cancel()  # the last caller gave up: nobody wants the answer

    def _settle(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._in_flight.get(key) is done:
            del self._in_flight[key]
        # Mark the exception as seen: when every waiter was cancelled nobody
        # else would, and asyncio would log it as never retrieved.
        if not done.cancelled():
            done.exception()

    def __len__(self) -> int:
        return len(self._in_flight)

    def __repr__(self) -> str:
        return f"Coalescer(in_flight={len(self)}, led={self.led}, joined={self.joined})"
