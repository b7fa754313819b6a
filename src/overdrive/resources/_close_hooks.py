"""A pool's close hook, run on every resource it retires without making anyone wait."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["CloseHooks"]

T = TypeVar("T")

_log = logging.getLogger("overdrive.resources")


class CloseHooks(Generic[T]):
    """Runs ``hook`` on each resource the pool named ``pool`` retires.

    A sync hook runs at once. An async one runs in the background, so giving a
    resource back never blocks, and is tracked until :meth:`finish`. A hook
    that raises is logged, never propagated: the resource is gone either way.
    """

    __slots__ = ("_hook", "_pool", "_running", "closed")

    def __init__(self, hook: Callable[[T], Awaitable[None] | None] | None, pool: str) -> None:
        self._hook = hook
        self._pool = pool
        self._running: set[asyncio.Future[None]] = set()
        self.closed = 0  # resources whose hook has finished (or that had none to run)

    @property
    def running(self) -> int:
        return len(self._running)

    def close_soon(self, resource: T) -> None:
        """Run the hook on ``resource``; an async one in the background."""
        try:
            outcome = None if self._hook is None else self._hook(resource)
        except Exception:
            _log.warning("pool %r: close hook raised", self._pool, exc_info=True)
            outcome = None
        if not inspect.isawaitable(outcome):
            self.closed += 1
            return
        task = asyncio.ensure_future(outcome)
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._running.discard(task)
        self.closed += 1
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.warning("pool %r: close hook raised", self._pool, exc_info=error)

    async def finish(self, settled: Callable[[asyncio.Future[Any]], Awaitable[bool]]) -> None:
        """Wait for the hooks still running while ``settled`` allows; cancel the rest."""
        if not self._running:
            return
        everything = asyncio.gather(*self._running, return_exceptions=True)
        if not await settled(everything):
            everything.cancel()  # cancels each close hook still running
            with contextlib.suppress(asyncio.CancelledError):
                await everything

    def __repr__(self) -> str:
        return f"CloseHooks(pool={self._pool!r}, running={self.running}, closed={self.closed})"
