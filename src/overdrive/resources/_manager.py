"""The ResourceManager: one owner for the resources the pipeline's parts share.

It holds the memory budget the caches and buffers allocate from, the CPU
executor, named bounded I/O queues, and the resource pools registered with
it, and gives the monitor one plain-data :meth:`~ResourceManager.snapshot`.

The memory budget is *accounting*, not allocation: Python cannot cap what an
object really takes, so parts say what they intend to hold (a cache its byte
budget, a stream its buffer) and the manager refuses what would not fit. A
part that stays within what it was granted keeps the sum within the budget.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from .._errors import ConfigError, MemoryBudgetError
from .._units import parse_bytes
from .._validate import check_int
from ._executor import CpuExecutor
from ._pool import ResourcePool

__all__ = ["ResourceManager"]

P = ParamSpec("P")
R = TypeVar("R")


class ResourceManager:
    """Memory budget, CPU workers, I/O queues and pools, owned in one place.

    >>> manager = ResourceManager(memory="1MB")
    >>> manager.allocate("cache.memory", 600_000)
    >>> manager.try_allocate("stream.buffers", 500_000)  # only 400,000 left
    False
    >>> with manager.reserve("stream.buffers", 100_000):
    ...     manager.memory_free
    300000
    >>> manager.usage()
    {'cache.memory': 600000}
    """

    __slots__ = ("_lock", "_owners", "_peak", "_pools", "_queues", "_used", "cpu", "memory_budget")

    def __init__(self, memory: int | str = "1GiB", *, cpu: CpuExecutor | None = None) -> None:
        try:
            self.memory_budget = parse_bytes(memory)
        except ValueError as exc:
            raise ConfigError("memory", str(exc)) from None
        self.cpu = cpu or CpuExecutor()
        self._lock = threading.Lock()  # parts may allocate from worker threads
        self._owners: dict[str, int] = {}
        self._used = 0
        self._peak = 0
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        self._pools: dict[str, ResourcePool[Any]] = {}

    # -- memory --------------------------------------------------------------------

    @property
    def memory_used(self) -> int:
        return self._used

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_budget - self._used)

    def allocate(self, owner: str, nbytes: int) -> None:
        """Grant ``owner`` ``nbytes`` more, or raise :class:`~overdrive.MemoryBudgetError`."""
        if not self.try_allocate(owner, nbytes):
            raise MemoryBudgetError(owner, nbytes, self.memory_free, self.memory_budget)

    def try_allocate(self, owner: str, nbytes: int) -> bool:
        """Grant ``owner`` ``nbytes`` more if they fit; False (nothing granted) if not."""
        check_int("nbytes", nbytes, 0)
        with self._lock:
            if self._used + nbytes > self.memory_budget:
                return False
            self._owners[owner] = self._owners.get(owner, 0) + nbytes
            self._used += nbytes
            self._peak = max(self._peak, self._used)
            return True

    def release(self, owner: str, nbytes: int | None = None) -> None:
        """Give back ``nbytes`` of ``owner``'s grant (all of it when None)."""
        with self._lock:
            held = self._owners.get(owner, 0)
            nbytes = held if nbytes is None else check_int("nbytes", nbytes, 0)
            if nbytes > held:
                raise ValueError(f"{owner!r} releases {nbytes} bytes but holds {held}")
            self._used -= nbytes
            if held == nbytes:
                self._owners.pop(owner, None)
            else:
                self._owners[owner] = held - nbytes

    @contextmanager
    def reserve(self, owner: str, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` for the ``with`` block (raises if they do not fit)."""
        self.allocate(owner, nbytes)
        try:
            yield
        finally:
            self.release(owner, nbytes)

    def usage(self, owner: str | None = None) -> dict[str, int]:
        """Bytes granted per owner (only ``owner``'s when given)."""
        with self._lock:
            if owner is not None:
                return {owner: self._owners.get(owner, 0)}
            return dict(self._owners)

    # -- CPU, queues, pools ----------------------------------------------------------------

    async def run_cpu(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run CPU-bound ``fn`` on the manager's executor and await its result."""
        return await self.cpu.run(fn, *args, **kwargs)

    def queue(self, name: str, maxsize: int = 1000) -> asyncio.Queue[Any]:
        """The bounded queue called ``name``, made on first ask; producers wait when it is full."""
        check_int(f"queue.{name}.maxsize", maxsize, 1)
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = asyncio.Queue(maxsize)
        elif queue.maxsize != maxsize:
            raise ConfigError(
                f"queue.{name}", f"exists with maxsize {queue.maxsize}, not {maxsize}"
            )
        return queue

    def add_pool(self, pool: ResourcePool[R]) -> ResourcePool[R]:
        """Own ``pool``: it appears in snapshots and closes with the manager."""
        if self._pools.get(pool.name, pool) is not pool:
            raise ConfigError("pool.name", f"a different pool is already called {pool.name!r}")
        self._pools[pool.name] = pool
        return pool

    def snapshot(self) -> dict[str, Any]:
        """Plain data (JSON-ready) for the monitor."""
        with self._lock:
            memory = {
                "budget": self.memory_budget,
                "used": self._used,
                "free": self.memory_free,
                "peak": self._peak,
                "owners": dict(self._owners),
            }
        return {
            "memory": memory,
            "cpu": self.cpu.stats(),
            "queues": {
                n: {"size": q.qsize(), "maxsize": q.maxsize} for n, q in self._queues.items()
            },
            "pools": {name: asdict(pool.stats()) for name, pool in self._pools.items()},
        }

    async def aclose(self, grace: float | None = None) -> None:
        """Close every pool (each waits ``grace`` seconds for held resources), stop the CPU."""
        await asyncio.gather(*(pool.aclose(grace) for pool in self._pools.values()))
        await asyncio.to_thread(self.cpu.shutdown)  # waits for running work off the loop

    async def __aenter__(self) -> ResourceManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"ResourceManager(memory={self._used}/{self.memory_budget} bytes, "
            f"owners={len(self._owners)}, cpu={self.cpu!r}, queues={len(self._queues)}, "
            f"pools={list(self._pools)})"
        )
