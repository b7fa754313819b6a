"""The admission queue: calls over the rate limit wait their turn instead of bouncing.

A call that fits the limit and finds nobody waiting goes at once. Otherwise it
takes a ticket, ordered by priority (higher first) and then arrival, and one
pump task serves the queue: it asks the limiter about the ticket at the head
and, when the answer is "in ``w`` seconds", sleeps exactly ``w`` (a timer,
``loop.call_at`` underneath) before asking again. Nothing polls, and a big
call at the head is not overtaken by small ones, so it cannot starve.

A ticket leaves the queue when it is admitted, when its deadline passes
(:class:`~overdrive.QueueTimeoutError`) or when its caller is cancelled. A
cancelled ticket is skipped without booking anything, so no capacity is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from .._clock import Clock
from .._errors import QueueFullError, QueueTimeoutError
from .._validate import check_int
from ._limiter import Limiter
from ._ratelimit import LocalLimiter

__all__ = ["AdmissionQueue", "settled_within"]

_log = logging.getLogger("overdrive.flow")


async def settled_within(future: asyncio.Future[Any], max_wait: float | None, clock: Clock) -> bool:
    """Wait until ``future`` is done or ``max_wait`` clock seconds passes; True if done.

    The future itself is never cancelled here: the caller decides what a
    timeout means for it.
    """
    if max_wait is None:
        await asyncio.shield(future)
        return True
    expiry = asyncio.ensure_future(clock.sleep(max_wait))
    try:
        await asyncio.wait((future, expiry), return_when=asyncio.FIRST_COMPLETED)
    finally:
        expiry.cancel()
    return future.done()


@dataclass(order=True, slots=True)
class _Ticket:
    rank: tuple[int, int]  # (-priority, arrival): the heap's order
    requests: int = field(compare=False)
    tokens: int = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class AdmissionQueue:
    """Waits for a :class:`~overdrive.flow.Limiter` to admit each call, in priority order.

    >>> import asyncio
    >>> from overdrive.testing import FakeClock
    >>> from overdrive.flow import LimitSpec, LocalLimiter
    >>> clock = FakeClock()
    >>> queue = AdmissionQueue(LocalLimiter(LimitSpec(600, None, 1.0), clock), clock)
    >>> asyncio.run(queue.admit(tokens=100))  # seconds queued
    0.0
    """

    __slots__ = (
        "_clock",
        "_heap",
        "_order",
        "_pump",
        "_waiting",
        "admitted",
        "limiter",
        "max_waiting",
        "name",
    )

    def __init__(
        self, limiter: Limiter, clock: Clock, *, max_waiting: int = 10_000, name: str = "default"
    ) -> None:
        self.max_waiting = check_int("max_waiting", max_waiting, 0)
        self.limiter = limiter
        self.name = name
        self.admitted = 0
        self._clock = clock
        self._heap: list[_Ticket] = []
        self._order = itertools.count()
        self._pump: asyncio.Task[None] | None = None
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Callers waiting for their turn now."""
        return self._waiting

    def backlog(self) -> float:
        """Seconds the calls waiting now need at the request rate: a newcomer's likely wait."""
        rpm = self.limiter.spec.rpm
        return self._waiting * 60.0 / rpm if rpm else 0.0

    async def admit(
        self,
        requests: int = 1,
        tokens: int = 0,
        *,
        priority: int = 0,
        max_wait: float | None = None,
    ) -> float:
        """Return once the call may go, with the seconds it waited.

        Raises :class:`~overdrive.QueueFullError` when ``max_waiting`` calls
        already wait, :class:`~overdrive.QueueTimeoutError` after ``max_wait``.
        """
        if not self._heap:
            limiter = self.limiter
            # The local limiter answers at once: no coroutine to make for it on every call.
            if type(limiter) is LocalLimiter:
                wait = limiter.try_now(requests, tokens)
            else:
                wait = await limiter.try_acquire(requests, tokens)
            if wait == 0.0:
                self.admitted += 1
                return 0.0
        started = self._clock.now()
        ticket = self._enqueue(requests, tokens, priority)
        self._waiting += 1
        try:
            await self._wait(ticket, max_wait)
        finally:
            self._waiting -= 1
            if not ticket.granted.done():
                ticket.granted.cancel()  # skipped by the pump, nothing booked
        return self._clock.now() - started

    def _enqueue(self, requests: int, tokens: int, priority: int) -> _Ticket:
        if self.waiting >= self.max_waiting:
            raise QueueFullError(self.name, self.max_waiting)
        granted = asyncio.get_running_loop().create_future()
        ticket = _Ticket((-priority, next(self._order)), requests, tokens, granted)
        heapq.heappush(self._heap, ticket)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._serve())
        return ticket

    async def _wait(self, ticket: _Ticket, max_wait: float | None) -> None:
        if not await settled_within(ticket.granted, max_wait, self._clock):
            raise QueueTimeoutError(self.name, max_wait or 0.0)
        ticket.granted.result()

    async def _serve(self) -> None:
        """The pump: admit the head whenever the limiter allows, sleep precisely otherwise."""
        while (head := self._head()) is not None:
            try:
                wait = await self.limiter.try_acquire(head.requests, head.tokens)
            except Exception as exc:  # the limiter is broken: fail the head, keep serving
                _log.exception("limiter of %r failed", self.name)
                self._settle(head, exc)
                continue
            if wait <= 0.0:
                if not self._settle(head, None) and head.tokens:
                    await self.limiter.adjust(-head.tokens)  # booked for a caller now gone
            else:
                await self._clock.sleep(wait)

    def _head(self) -> _Ticket | None:
        heap = self._heap
        while heap and heap[0].granted.done():
            heapq.heappop(heap)  # cancelled or expired while waiting
        return heap[0] if heap else None

    def _settle(self, head: _Ticket, error: Exception | None) -> bool:
        """Hand ``head`` its answer; False if its caller had already gone.

        The ticket is not popped here: a higher-priority arrival may have
        taken the top of the heap meanwhile. Answered tickets are dropped by
        :meth:`_head`.
        """
        if head.granted.done():
            return False  # gave up between the ask and the answer
        if error is None:
            self.admitted += 1
            head.granted.set_result(None)
        else:
            head.granted.set_exception(error)
        return True

    def forget_loop(self) -> None:
        """The event loop the waiting calls and the pump ran on is gone: start with none.

        Nothing was booked for a ticket still waiting, so no capacity is lost.
        """
        self._heap.clear()
        self._pump = None
        self.limiter.forget_loop()
        self._waiting = 0

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    def __repr__(self) -> str:
        return (
            f"AdmissionQueue({self.name!r}, waiting={self.waiting}, admitted={self.admitted}, "
            f"limiter={self.limiter!r})"
        )
