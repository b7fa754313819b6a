"""The simulated accelerator behind chat completions: a hidden capacity with a knee.

Up to ``capacity`` calls generate at once at full speed. Past it every call
slows down, sharing the accelerator the way a real inference server does when
its batch no longer fits (processor sharing): with ``n`` calls generating, each
progresses at ``(capacity / n) ** exponent`` of full speed. An exponent of 1
keeps total throughput flat past the knee (latency grows, work does not);
above 1 throughput falls as well, like a server thrashing its KV cache.

A call's work is the latency it would have alone (time to first token plus
its tokens at the decode pace). Speed is recomputed whenever a call starts or
ends, so calls in flight slow down and speed up with the load, as on a GPU.

>>> from overdrive.testing import FakeClock
>>> accelerator = Accelerator(2, 1.5, FakeClock())
>>> [accelerator.speed(n) for n in (1, 2, 8)]
[1.0, 1.0, 0.125]
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from overdrive._clock import Clock

__all__ = ["Accelerator"]

# Work left below this many seconds counts as done: float rounding, and event
# loops whose timers fire a hair early, must not leave a call waiting forever.
_DONE_EPS = 1e-9


class Accelerator:
    """Work shared among the calls generating at once; see the module docstring."""

    __slots__ = ("_capacity", "_clock", "_exponent", "_jobs", "_load", "_synced", "_timer")

    def __init__(self, capacity: int, exponent: float, clock: Clock) -> None:
        self._capacity = capacity
        self._exponent = exponent
        self._clock = clock
        self._load = 0
        self._jobs: dict[asyncio.Future[None], float] = {}  # waiter -> work left (s)
        self._synced = clock.now()
        self._timer: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        """Calls generating now."""
        return self._load

    def speed(self, load: int | None = None) -> float:
        """The share of full speed each call gets at ``load`` calls (now, by default)."""
        load = self._load if load is None else load
        if load <= self._capacity:
            return 1.0
        return float((self._capacity / load) ** self._exponent)

    @contextlib.contextmanager
    def occupy(self) -> Iterator[None]:
        """Count one call as generating for the block: it takes its share of the speed."""
        self._set_load(self._load + 1)
        try:
            yield
        finally:
            self._set_load(self._load - 1)

    async def work(self, seconds: float) -> None:
        """Return once ``seconds`` of full-speed work is done at the shared speed."""
        if seconds <= 0.0:
            return
        self._sync()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs[done] = seconds
        self._reschedule()
        try:
            await done
        finally:
            if self._jobs.pop(done, None) is not None and not self._jobs:
                # Gone early (client left, server closing) and nobody left: no timer.
                self._reschedule()

    def _set_load(self, load: int) -> None:
        self._sync()  # the work done so far went at the old speed
        self._load = load
        self._reschedule()

    def _sync(self) -> None:
        now = self._clock.now()
        progress = (now - self._synced) * self.speed()
        self._synced = now
        if progress > 0.0:
            for job in self._jobs:
                self._jobs[job] -= progress

    def _reschedule(self) -> None:
        # One timer for the soonest finish; any change of load or jobs re-arms it.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._jobs:
            soonest = min(self._jobs.values())
            delay = max(0.0, soonest) / self.speed()
            self._timer = asyncio.ensure_future(self._finish_after(delay))

    async def _finish_after(self, delay: float) -> None:
        await self._clock.sleep(delay)
        self._timer = None
        self._sync()
        for job, left in list(self._jobs.items()):
            if left <= _DONE_EPS:
                del self._jobs[job]
                if not job.done():
                    job.set_result(None)
        self._reschedule()

    def __repr__(self) -> str:
        return (
            f"Accelerator(capacity={self._capacity}, exponent={self._exponent}, "
            f"load={self._load}, jobs={len(self._jobs)}, speed={self.speed():.3f})"
        )
