"""``map(fn, items, concurrency=n)``: a bounded, optionally ordered concurrent map.

A feeder task pulls an item only when one of ``concurrency`` slots is free; a
slot is taken when the item is pulled and given back when its result is
handed to the consumer. So at most ``concurrency`` calls run, at most
``concurrency`` results wait, and the source is never more than
``concurrency`` items ahead of the consumer, however slow the consumer is.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast, overload

from .._errors import RequestError
from ._base import AnyIterable, Stream, items_of, whole_number

__all__ = ["MapStream", "map"]

T = TypeVar("T")
R = TypeVar("R")


@overload
def map(
    fn: Callable[[T], Awaitable[R]],
    items: AnyIterable[T],
    *,
    concurrency: int = ...,
    ordered: bool = ...,
    return_exceptions: Literal[False] = ...,
    to_thread: bool = ...,
) -> MapStream[R]: ...
@overload
def map(
    fn: Callable[[T], Awaitable[R]],
    items: AnyIterable[T],
    *,
    concurrency: int = ...,
    ordered: bool = ...,
    return_exceptions: bool,
    to_thread: bool = ...,
) -> MapStream[R | Exception]: ...
@overload
def map(
    fn: Callable[[T], R],
    items: AnyIterable[T],
    *,
    concurrency: int = ...,
    ordered: bool = ...,
    return_exceptions: Literal[False] = ...,
    to_thread: bool = ...,
) -> MapStream[R]: ...
@overload
def map(
    fn: Callable[[T], R],
    items: AnyIterable[T],
    *,
    concurrency: int = ...,
    ordered: bool = ...,
    return_exceptions: bool,
    to_thread: bool = ...,
) -> MapStream[R | Exception]: ...
def map(
    fn: Callable[[T], Any],
    items: AnyIterable[T],
    *,
    concurrency: int = 8,
    ordered: bool = True,
    return_exceptions: bool = False,
    to_thread: bool = False,
) -> MapStream[Any]:
    """Apply ``fn`` to each item of a sync or async iterable, ``concurrency`` calls at a time.

    ``fn`` may be async, or sync: a sync ``fn`` runs inline on the event loop
    (one call at a time; right for cheap functions) unless ``to_thread=True``
    runs each call in the default executor's threads (blocking I/O, or CPU work
    that releases the GIL such as hashing). A thread cannot be cancelled: on an
    error or early close its call finishes in the background and is dropped.

    ``ordered=True`` yields results in input order (a slow item holds back the
    finished ones after it, never more than ``concurrency`` of them);
    ``ordered=False`` yields them as they complete.

    Errors: the first error raises from the stream and cancels the calls in
    flight. "First" is in input order when ordered, like a sequential loop (and
    ``Executor.map``); in completion order otherwise. With
    ``return_exceptions=True`` an ``Exception`` from ``fn`` is yielded as the
    item's result instead; an error of the source itself always raises.

    Close the stream (``aclose()``, ``async with``) to stop early: calls in
    flight are cancelled and awaited, and the consumed iterator is closed.

    >>> import asyncio
    >>> async def double(x: int) -> int:
    ...     await asyncio.sleep(0.001 * (5 - x))  # later items finish first
    ...     return 2 * x
    >>> async def main() -> list[int]:
    ...     async with map(double, range(5), concurrency=3) as results:
    ...         return [r async for r in results]
    >>> asyncio.run(main())
    [0, 2, 4, 6, 8]
    """
    if not callable(fn):
        raise RequestError("fn", f"must be callable, got {type(fn).__name__}")
    if to_thread and inspect.iscoroutinefunction(fn):
        raise RequestError("to_thread", "fn is async; to_thread runs sync functions in threads")
    whole_number("concurrency", concurrency, 1)
    if not isinstance(items, Iterable | AsyncIterable):
        raise RequestError("items", f"must be a sync or async iterable, not {type(items).__name__}")
    mapper = _Mapper(fn, concurrency, ordered, return_exceptions, to_thread)
    return MapStream(_deliver(mapper, items_of(items)), mapper)


R_co = TypeVar("R_co", covariant=True)


class MapStream(Stream[R_co]):
    """The results of one :func:`map`; ``repr`` shows the calls running and waiting."""

    __slots__ = ("_mapper",)

    def __init__(self, agen: AsyncGenerator[R_co, None], mapper: _Mapper[Any, Any]) -> None:
        super().__init__(agen)
        self._mapper = mapper

    @property
    def running(self) -> int:
        """Calls of ``fn`` in flight now."""
        return self._mapper.running

    @property
    def delivered(self) -> int:
        """Results handed to the consumer so far."""
        return self._mapper.delivered

    def __repr__(self) -> str:
        m = self._mapper
        name = getattr(m.fn, "__qualname__", type(m.fn).__name__)
        return (
            f"MapStream({name}, concurrency={m.concurrency}, ordered={m.ordered}, "
            f"running={m.running}, held={m.held}, delivered={m.delivered})"
        )


@dataclass(slots=True)
class _End:
    """The source ended, by running out or with ``error``."""

    error: Exception | None = None


async def _deliver(
    mapper: _Mapper[T, R], items: AsyncGenerator[T, None]
) -> AsyncGenerator[R | Exception, None]:
    mapper.start(items)
    try:
        while (task := await mapper.next_done()) is not None:
            yield mapper.outcome(task)
    finally:
        await mapper.shutdown(items)


class _Mapper(Generic[T, R]):
    """The state of one map: slots, the feeder task, and the calls not yet delivered."""

    __slots__ = (
        "_feeder",
        "_ready",
        "_room",
        "_source_done",
        "_tasks",
        "concurrency",
        "delivered",
        "fn",
        "ordered",
        "return_exceptions",
        "to_thread",
    )

    def __init__(
        self,
        fn: Callable[[T], Awaitable[R] | R],
        concurrency: int,
        ordered: bool,
        return_exceptions: bool,
        to_thread: bool,
    ) -> None:
        self.fn, self.concurrency, self.ordered = fn, concurrency, ordered
        self.return_exceptions, self.to_thread = return_exceptions, to_thread
        self.delivered = 0
        self._room = asyncio.Semaphore(concurrency)
        # Ordered: every task as launched, so the head is waited for first.
        # Unordered: tasks as they finish. Either way the source's _End comes last.
        self._ready: asyncio.Queue[asyncio.Task[R] | _End] = asyncio.Queue()
        self._tasks: set[asyncio.Task[R]] = set()  # pulled, not yet delivered
        self._feeder: asyncio.Task[None] | None = None
        self._source_done = False

    @property
    def held(self) -> int:
        return len(self._tasks)

    @property
    def running(self) -> int:
        return sum(not task.done() for task in self._tasks)

    def start(self, items: AsyncGenerator[T, None]) -> None:
        self._feeder = asyncio.create_task(self._feed(items))

    async def _feed(self, items: AsyncGenerator[T, None]) -> None:
        try:
            while True:
                await self._room.acquire()
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    break
                self._launch(item)
        except Exception as exc:  # the source failed: raised where the consumer reaches it
            self._ready.put_nowait(_End(exc))
        else:
            self._ready.put_nowait(_End())

    def _launch(self, item: T) -> None:
        task = asyncio.create_task(self._call(item))
        self._tasks.add(task)
        if self.ordered:
            self._ready.put_nowait(task)
        else:
            task.add_done_callback(self._ready.put_nowait)

    async def _call(self, item: T) -> R:
        if self.to_thread:
            return await asyncio.to_thread(cast("Callable[[T], R]", self.fn), item)
        result = self.fn(item)
        if inspect.isawaitable(result):
            return await result
        return result

    async def next_done(self) -> asyncio.Task[R] | None:
        """The next finished task to deliver; None once every result has been delivered."""
        while not (self._source_done and not self._tasks):
            ready = await self._ready.get()
            if isinstance(ready, _End):
                self._source_done = True
                if ready.error is not None:
                    raise ready.error
                continue
            if not ready.done():  # ordered: wait for the head, the later ones keep running
                await asyncio.wait([ready])
            return ready
        return None

    def outcome(self, task: asyncio.Task[R]) -> R | Exception:
        """The task's result, its exception as a value, or its exception raised."""
        self._tasks.discard(task)
        self._room.release()  # its result is being handed over: the feeder may pull one more
        self.delivered += 1
        error = task.exception()
        if error is None:
            return task.result()
        if self.return_exceptions and isinstance(error, Exception):
            return error
        raise error

    async def shutdown(self, items: AsyncGenerator[T, None]) -> None:
        """Cancel the feeder and every call not yet delivered, wait for them, close the source."""
        waiting: list[asyncio.Task[Any]] = [*self._tasks]
        if self._feeder is not None:
            waiting.append(self._feeder)
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting)
        for task in self._tasks:
            if not task.cancelled():
                task.exception()  # mark retrieved: an undelivered failure is not worth a log line
        self._tasks.clear()
        await items.aclose()
