"""Injectable time.

Everything that reads time or waits for it takes a :class:`Clock`, so tests
step a :class:`~overdrive.testing.FakeClock` instead of sleeping.

>>> clock = SystemClock()
>>> clock.now() <= clock.now()
True
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic seconds plus a way to wait for them."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real monotonic clock; ``sleep`` is ``asyncio.sleep`` (timer based, no polling)."""

    __slots__ = ()

    # The C function itself, not a method wrapping it: the pipeline reads the
    # time a dozen times per call, and each Python frame would cost more than
    # the read.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"
