"""Active health probes: one background task per deployment asks it, now and then, if it is up."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from .._clock import Clock

__all__ = ["Prober"]

_log = logging.getLogger("overdrive.route")

T = TypeVar("T")

# Each wait is the interval ±10%, so probes of many deployments drift apart.
_SPREAD = 0.1


class Prober(Generic[T]):
    """Runs ``check(target)`` every ``interval`` for each target and reports the answer.

    Tasks start on :meth:`start` (idempotent; call it from the loop that
    should run them) and stop on :meth:`aclose`. A check that raises counts
    as a failed one.
    """

    __slots__ = ("_check", "_clock", "_interval", "_loop", "_report", "_rng", "_targets", "_tasks")

    def __init__(
        self,
        targets: Sequence[T],
        check: Callable[[T], Awaitable[bool]],
        report: Callable[[T, bool], None],
        *,
        interval: float,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._targets = list(targets)
        self._check = check
        self._report = report
        self._interval = interval
        self._clock = clock
        self._rng = rng
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        """Start probing on the running loop, unless already probing on a live loop."""
        loop = asyncio.get_running_loop()
        if self._tasks and (self._loop is loop or not _closed(self._loop)):
            return
        self._loop = loop
        self._tasks = [loop.create_task(self._probe(target)) for target in self._targets]

    async def _probe(self, target: T) -> None:
        while True:
            spread = 1.0 + _SPREAD * (2.0 * self._rng.random() - 1.0)
            await self._clock.sleep(self._interval * spread)
            try:
                ok = await self._check(target)
            except Exception:  # a probe must never die of what it probes
                _log.debug("health probe of %r raised", target, exc_info=True)
                ok = False
            self._report(target, ok)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks and self._loop is asyncio.get_running_loop():
            await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Prober({len(self._targets)} targets, every {self._interval:g}s, {state})"


def _closed(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is None or loop.is_closed()
