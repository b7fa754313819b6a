"""Single-flight: identical requests already in flight share one result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

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

    __slots__ = ("_in_flight", "joined", "led")

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, _Flight[T]] = {}
        self.led = 0
        self.joined = 0

    async def run(
        self, key: Hashable, work: Callable[[], Coroutine[Any, Any, T]]
    ) -> tuple[T, bool]:
        """Return ``(result, joined)``; ``joined`` is True when another caller led."""
        flight = self._in_flight.get(key)
        joined = flight is not None
        if flight is None:
            self.led += 1
            flight = self._in_flight[key] = _Flight()
            flight.task = asyncio.get_running_loop().create_task(self._lead(key, flight, work))
        else:
            self.joined += 1
        # Each caller awaits a future of its own, so cancelling one caller cancels
        # only its future (what ``asyncio.shield`` would do, for less).
        waiter: asyncio.Future[T] = flight.task.get_loop().create_future()
        waiters = flight.waiters
        waiters.append(waiter)
        try:
            return await waiter, joined
        finally:
            waiters.remove(waiter)
            if not waiters and not flight.task.done():
                # The last caller gave up: nobody wants the answer. Forgotten now, so
                # a newcomer starts afresh rather than join work being cancelled (and
                # a task cancelled before its first step would never reach _lead).
                flight.task.cancel()
                self._forget(key, flight)

    async def _lead(
        self, key: Hashable, flight: _Flight[T], work: Callable[[], Coroutine[Any, Any, T]]
    ) -> None:
        """Run the shared work and hand its outcome to every waiter as it ends.

        Handed over here, not from a done callback: that would cost every call
        one more turn of the event loop. Nothing is left in the task itself
        for anyone to retrieve.
        """
        try:
            result = await work()
        except (Exception, asyncio.CancelledError) as exc:
            self._forget(key, flight)
            flight.fail(exc)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: theirs, then ours
            self._forget(key, flight)
            flight.fail(exc)
            raise
        else:
            self._forget(key, flight)
            flight.succeed(result)

    def forget_loop(self) -> None:
        """The event loop the flights ran on is gone: forget them (nobody can join those)."""
        self._in_flight.clear()

    def _forget(self, key: Hashable, flight: _Flight[T]) -> None:
        if self._in_flight.get(key) is flight:
            del self._in_flight[key]

    def __len__(self) -> int:
        return len(self._in_flight)

    def __repr__(self) -> str:
        return f"Coalescer(in_flight={len(self)}, led={self.led}, joined={self.joined})"


class _Flight(Generic[T]):
    """One shared piece of work and the futures of the callers waiting on it."""

    __slots__ = ("task", "waiters")

    task: asyncio.Task[None]  # set as soon as the flight is made

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[T]] = []

    def succeed(self, result: T) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(result)

    def fail(self, error: BaseException) -> None:
        cancelled = isinstance(error, asyncio.CancelledError)
        for waiter in self.waiters:
            if waiter.done():
                continue
            if cancelled:
                waiter.cancel()
            else:
                waiter.set_exception(error)
