"""Micro-batching: many single-item calls become a few batched calls.

A :class:`Batcher` collects items from concurrent callers and hands them to a
batch handler when the batch is full (by count or by cost, e.g. tokens) or when
the oldest waiting item has waited ``max_wait``. Each caller gets back its own
item's result, or its own item's error.

Errors are the ``BatchError`` family of ``overdrive._errors``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from .._clock import Clock, SystemClock
from .._errors import (
    BatchClosedError,
    BatchError,
    BatchQueueFullError,
    BatchResultCountError,
    ConfigError,
)
from .._validate import check_duration, check_float, check_int

__all__ = [
    "BatchClosedError",
    "BatchError",
    "BatchQueueFullError",
    "BatchResultCountError",
    "BatchStats",
    "BatchedFunction",
    "Batcher",
    "batched",
]

I = TypeVar("I")  # noqa: E741 - item and output types, short as in the public signature
O = TypeVar("O")  # noqa: E741

Handler: TypeAlias = Callable[[list[I]], Awaitable[Sequence[O | BaseException]]]
_Reason: TypeAlias = Literal["full", "cost", "timer", "close"]

MAX_WAIT_LIMIT = 60.0
"""Upper bound for ``max_wait`` in seconds: longer than this is a queue, not a batch."""


@dataclasses.dataclass(slots=True)
class BatchStats:
    """Counters of one batcher; ``Batcher.stats`` returns a snapshot copy."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    flush_full: int = 0
    flush_cost: int = 0
    flush_timer: int = 0
    flush_close: int = 0
    dropped_cancelled: int = 0
    errors: int = 0
    """Items that ended with an error (their own, or their batch's)."""
    failed_batches: int = 0
    """Batches whose handler raised or returned the wrong number of results."""

    @property
    def mean_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class _Entry(Generic[I, O]):
    """One waiting caller: its item, cost, arrival time and the future it awaits."""

    __slots__ = ("cost", "dequeued", "future", "item", "since")

    def __init__(self, item: I, cost: float, since: float, future: asyncio.Future[O]) -> None:
        self.item = item
        self.cost = cost
        self.since = since
        self.future = future
        self.dequeued = False  # sent, or dropped after a cancel


class Batcher(Generic[I, O]):
    """Groups single items from concurrent callers into calls of ``handler``.

    ``handler`` gets a list of items in submit order and returns one result
    per item; an exception instance in its place fails only that item. A batch
    is sent when it holds ``max_batch`` items, when adding an item would push
    its total ``cost`` past ``max_cost``, or ``max_wait`` seconds after its
    oldest item arrived. Batches do not wait for each other.

    >>> async def main() -> list[int]:
    ...     async def double(items: list[int]) -> list[int]:
    ...         return [i * 2 for i in items]
    ...     async with Batcher(double, max_batch=8) as batcher:
    ...         return list(await asyncio.gather(*(batcher.submit(i) for i in range(3))))
    >>> asyncio.run(main())
    [0, 2, 4]
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_cost",
        "_handler",
        "_in_flight",
        "_max_batch",
        "_max_cost",
        "_max_wait",
        "_queue",
        "_queued_cost",
        "_stats",
        "_tasks",
        "_timer",
        "max_queue",
        "name",
    )

    def __init__(
        self,
        handler: Handler[I, O],
        *,
        max_batch: int = 64,
        max_wait: float = 0.005,
        max_cost: float | None = None,
        cost: Callable[[I], float] | None = None,
        max_queue: int = 10_000,
        clock: Clock | None = None,
        name: str = "batch",
    ) -> None:
        self.name = name
        self.max_queue = check_int("max_queue", max_queue, 1)
        self._max_batch = check_int("max_batch", max_batch, 1, self.max_queue)
        self._max_wait = check_duration("max_wait", max_wait, high=MAX_WAIT_LIMIT)
        if (max_cost is None) != (cost is None):
            raise ConfigError("max_cost", "max_cost and cost go together; give both or neither")
        if max_cost is not None:
            check_float("max_cost", max_cost, 0.0, open_low=True, finite=True)
        self._max_cost = max_cost
        self._cost = cost
        self._handler = handler
        self._clock: Clock = clock or SystemClock()
        self._queue: list[_Entry[I, O]] = []
        self._queued_cost = 0.0
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self._stats = BatchStats()

    # -- tunables -------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        self._max_batch = check_int("max_batch", value, 1, self.max_queue)
        # A smaller limit may already be reached by the items waiting now.
        while len(self._queue) >= self._max_batch:
            self._flush("full", self._max_batch)

    @property
    def max_wait(self) -> float:
        return self._max_wait

    @max_wait.setter
    def max_wait(self, value: float) -> None:
        self._max_wait = check_duration("max_wait", value, high=MAX_WAIT_LIMIT)
        if self._timer is not None:
            self._disarm()
            self._arm()

    # -- state ------------------------------------------------------------------

    @property
    def stats(self) -> BatchStats:
        return dataclasses.replace(self._stats)

    @property
    def queued(self) -> int:
        """Items waiting for their batch to be sent."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Items sent to the handler whose batch has not finished."""
        return self._in_flight

    @property
    def closed(self) -> bool:
        return self._closed

    # -- submitting -------------------------------------------------------------

    async def submit(self, item: I) -> O:
        """Queue ``item`` and return its result once its batch has run."""
        entry = self._enqueue(item)
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._drop(entry)
            raise

    def _enqueue(self, item: I) -> _Entry[I, O]:
        if self._closed:
            raise BatchClosedError(self.name)
        if len(self._queue) + self._in_flight >= self.max_queue:
            raise BatchQueueFullError(self.name, self.max_queue)
        cost = self._cost_of(item)
        over = self._max_cost is not None and self._queued_cost + cost > self._max_cost
        if over and self._queue:
            self._flush("cost")
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        entry = _Entry(item, cost, self._clock.now(), future)
        self._queue.append(entry)
        self._queued_cost += cost
        self._after_append()
        return entry

    def _cost_of(self, item: I) -> float:
        if self._cost is None:
            return 0.0
        cost = self._cost(item)
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"batcher {self.name!r}: cost() returned {cost!r}; need >= 0")
        return cost

    def _after_append(self) -> None:
        if len(self._queue) >= self._max_batch:
            self._flush("full")
        elif self._max_cost is not None and self._queued_cost >= self._max_cost:
            self._flush("cost")  # also sends an item costing more than max_cost alone
        elif len(self._queue) == 1:
            self._arm()

    def _drop(self, entry: _Entry[I, O]) -> None:
        """Forget a cancelled caller's item if its batch has not been sent."""
        if entry.dequeued:
            return
        entry.dequeued = True
        self._queue.remove(entry)
        self._queued_cost = sum(e.cost for e in self._queue)
        self._stats.dropped_cancelled += 1
        if not self._queue:
            self._disarm()
        # The timer stays set for the removed item's deadline: it may flush a
        # little early, never late.

    # -- the timer ---------------------------------------------------------------

    def _arm(self) -> None:
        deadline = self._queue[0].since + self._max_wait
        self._timer = asyncio.get_running_loop().create_task(self._expire(deadline))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _expire(self, deadline: float) -> None:
        await self._clock.sleep(deadline - self._clock.now())
        self._timer = None  # so the flush below does not cancel this very task
        self._flush("timer")

    # -- sending ------------------------------------------------------------------

    def _flush(self, reason: _Reason, count: int | None = None) -> None:
        taken = self._queue[:count] if count is not None else self._queue
        self._queue = self._queue[len(taken) :]
        self._queued_cost = sum(e.cost for e in self._queue)
        self._disarm()
        if self._queue:
            self._arm()
        for entry in taken:
            entry.dequeued = True
        # A caller cancelled a moment ago may not have run its cleanup yet.
        batch = [e for e in taken if not e.future.cancelled()]
        self._stats.dropped_cancelled += len(taken) - len(batch)
        if batch:
            self._dispatch(batch, reason)

    def _dispatch(self, batch: list[_Entry[I, O]], reason: _Reason) -> None:
        stats = self._stats
        stats.batches += 1
        stats.items += len(batch)
        stats.largest = max(stats.largest, len(batch))
        attr = f"flush_{reason}"
        setattr(stats, attr, getattr(stats, attr) + 1)
        self._in_flight += len(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Entry[I, O]]) -> None:
        try:
            results = await self._handler([e.item for e in batch])
            if len(results) != len(batch):
                raise BatchResultCountError(self.name, len(batch), len(results))
        except asyncio.CancelledError:
            for entry in batch:
                entry.future.cancel()
            raise
        except Exception as exc:
            self._stats.failed_batches += 1
            self._settle(batch, [exc] * len(batch))
        else:
            self._settle(batch, results)
        finally:
            self._in_flight -= len(batch)

    def _settle(self, batch: list[_Entry[I, O]], results: Sequence[O | BaseException]) -> None:
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._stats.errors += 1
                if not entry.future.done():
                    entry.future.set_exception(result)
            elif not entry.future.done():
                entry.future.set_result(result)

    # -- closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Send what is queued, wait for batches in flight, and refuse new items."""
        self._closed = True
        if self._queue:
            self._flush("close")
        if self._tasks:
            # asyncio.wait, unlike gather, does not cancel the batches if we are cancelled.
            await asyncio.wait(set(self._tasks))

    async def __aenter__(self) -> Batcher[I, O]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"Batcher({self.name!r}, queued={len(self._queue)}, in_flight={self._in_flight},"
            f" batches_in_flight={len(self._tasks)}, max_batch={self._max_batch},"
            f" max_wait={self._max_wait}, closed={self._closed})"
        )


class BatchedFunction(Generic[I, O]):
    """``fn(items) -> results`` called as ``g(item) -> result``; made by :func:`batched`.

    It owns one :class:`Batcher` per event loop, created on first use, because
    a batcher's futures and timers belong to one loop.
    """

    def __init__(self, fn: Handler[I, O], make: Callable[[], Batcher[I, O]]) -> None:
        self._make = make
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher[I, O]] = (
            weakref.WeakKeyDictionary()
        )
        self._name = make().name  # also checks the settings now, not at the first call
        functools.update_wrapper(self, fn)

    async def __call__(self, item: I) -> O:
        return await self.batcher.submit(item)

    @property
    def batcher(self) -> Batcher[I, O]:
        """The batcher of the running event loop (for stats and tuning)."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = self._make()
        return batcher

    async def aclose(self) -> None:
        """Close the running loop's batcher; the next call starts a fresh one."""
        batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.aclose()

    def __repr__(self) -> str:
        return f"BatchedFunction({self._name!r}, loops={len(self._batchers)})"


# ``cost`` takes Any so that I and O stay free here, bound by the decorated
# function rather than fixed (to Never) when ``batched(...)`` is called.
def batched(
    *,
    max_batch: int = 64,
    max_wait: float = 0.005,
    max_cost: float | None = None,
    cost: Callable[[Any], float] | None = None,
    max_queue: int = 10_000,
    clock: Clock | None = None,
    name: str | None = None,
) -> Callable[[Handler[I, O]], BatchedFunction[I, O]]:
    """Turn an async ``f(items: list[I]) -> list[O]`` into ``g(item: I) -> O``.

    Settings are those of :class:`Batcher`; they are checked at decoration time.

    >>> @batched(max_batch=16, max_wait=0.01)
    ... async def embed(texts: list[str]) -> list[int]:
    ...     return [len(t) for t in texts]
    >>> async def main() -> list[int]:
    ...     return list(await asyncio.gather(embed("a"), embed("bb")))
    >>> asyncio.run(main())
    [1, 2]
    """

    def decorate(fn: Handler[I, O]) -> BatchedFunction[I, O]:
        label = name or str(getattr(fn, "__qualname__", "batched"))

        def make() -> Batcher[I, O]:
            return Batcher(
                fn,
                max_batch=max_batch,
                max_wait=max_wait,
                max_cost=max_cost,
                cost=cost,
                max_queue=max_queue,
                clock=clock,
                name=label,
            )

        return BatchedFunction(fn, make)

    return decorate
