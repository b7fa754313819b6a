"""CPU-bound work off the event loop, on workers sized to the machine.

Threads suit work that releases the GIL (tokenizers, numpy, hashing,
compression); pure-Python number crunching needs ``processes=True``, where
the callable and its arguments must pickle. Workers start on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .._errors import ResourceError
from .._validate import check_int

__all__ = ["CpuExecutor", "cpu_count"]

P = ParamSpec("P")
R = TypeVar("R")


def cpu_count() -> int:
    """CPUs this process may use: its affinity where Python can tell (3.13+), else all."""
    counter = getattr(os, "process_cpu_count", None) or os.cpu_count
    return int(counter() or 1)


class CpuExecutor:
    """Runs callables in a thread (or process) pool of ``workers`` and awaits the result.

    >>> import asyncio
    >>> cpu = CpuExecutor(workers=2)
    >>> asyncio.run(cpu.run(sum, range(10)))
    45
    >>> cpu.shutdown()
    """

    __slots__ = ("_executor", "_shut", "completed", "failed", "in_flight", "processes", "workers")

    def __init__(self, workers: int | None = None, *, processes: bool = False) -> None:
        self.workers = cpu_count() if workers is None else check_int("workers", workers, 1)
        self.processes = processes
        self.in_flight = 0
        self.completed = 0
        self.failed = 0
        self._executor: concurrent.futures.Executor | None = None
        self._shut = False

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` on a worker; cancelling the caller drops it if not started."""
        call = functools.partial(fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._pool(), call)
        self.in_flight += 1
        try:
            result = await future
        except Exception:
            self.failed += 1
            raise
        finally:
            self.in_flight -= 1
        self.completed += 1
        return result

    def _pool(self) -> concurrent.futures.Executor:
        if self._shut:
            raise ResourceError("cpu executor", "shut down; it runs no more work")
        if self._executor is None:
            self._executor = self._start()
        return self._executor

    def _start(self) -> concurrent.futures.Executor:
        if self.processes:
            # spawn: forking a process that runs threads (the event loop's
            # helpers, other executors) can deadlock the child.
            context = multiprocessing.get_context("spawn")
            return concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        return concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix="overdrive-cpu"
        )

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the workers; with ``wait`` block until running work is done. Idempotent."""
        self._shut = True
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {
            "kind": "process" if self.processes else "thread",
            "workers": self.workers,
            "started": self._executor is not None,
            "in_flight": self.in_flight,
            "completed": self.completed,
            "failed": self.failed,
        }

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "threads"
        return (
            f"CpuExecutor({self.workers} {kind}, in_flight={self.in_flight}, "
            f"completed={self.completed}, failed={self.failed})"
        )
