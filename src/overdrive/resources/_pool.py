"""An async pool of reusable resources: HTTP clients, DB connections, model instances.

Accounting is by *slots*: ``size`` counts every resource that is idle, held,
or being created, and never exceeds ``max_size``. A caller takes a slot in one
of three ways, in this order:

1. an idle resource (the most recently used: hot ones stay hot, cold ones age
   out at the other end of the idle deque, where idle eviction looks);
2. a *permit* to create one, when the pool is below ``max_size``;
3. a turn in a FIFO queue of futures. Whoever frees something hands it to the
   head of the queue directly: a returned resource, or a permit when a
   resource was discarded. Nothing polls, and a newcomer cannot overtake a
   waiter, because a waiter exists only while nothing is free.

Every path that takes a slot gives it back on every exit: a waiter cancelled
just as it was served passes what it got to the next waiter, a factory failure
frees its permit, a check interrupted by cancellation or the deadline discards
the resource (its state is unknown). Close hooks run in the background, so
releasing never blocks; :meth:`ResourcePool.aclose` waits for them.

The pool's plain parts (options, stats, slots), its close hooks and its
:class:`Lease` live in modules of their own. What is left here is one class
on purpose: the slot accounting above holds only if acquiring, giving back and
closing are read and changed together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack, cast, overload

from .._clock import Clock, SystemClock
from .._errors import ConfigError, PoolClosedError, PoolTimeoutError
from .._validate import check_duration, check_int
from ..flow import settled_within
from ._close_hooks import CloseHooks
from ._lease import Lease
from ._pool_parts import PoolOptions, PoolStats, Slot

__all__ = ["Lease", "PoolOptions", "PoolStats", "ResourcePool"]

T = TypeVar("T")
R = TypeVar("R")

_log = logging.getLogger("overdrive.resources")


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


class _Expired(Exception):
    """The acquire deadline passed; :meth:`ResourcePool._acquire` turns it into the public error."""


async def _resolve(value: Awaitable[R] | R) -> R:
    """The value of a hook that may be sync or async."""
    if inspect.isawaitable(value):
        return cast(R, await value)
    return value


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned task's outcome as seen, so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


class ResourcePool(Generic[T]):
    """Hands out at most ``max_size`` resources, each to one holder at a time.

    ``factory`` makes a resource, ``close`` disposes of one, ``check`` says
    whether an idle one is still good before it is handed out (a resource that
    fails it is closed and replaced). Each may be sync or async.

    >>> import asyncio, itertools
    >>> ids = itertools.count(1)
    >>> async def main() -> list[int]:
    ...     async with ResourcePool(lambda: next(ids), max_size=2) as pool:
    ...         async with pool.acquire() as a, pool.acquire() as b:
    ...             pass
    ...         async with pool.acquire() as c:  # the most recently returned: a
    ...             return [a, b, c]
    >>> asyncio.run(main())
    [1, 2, 1]

    Options: ``min_size`` resources are made by :meth:`open` and idle eviction
    never goes below it; ``acquire_timeout`` bounds the whole acquire (waiting,
    creating, checking) and raises :class:`~overdrive.PoolTimeoutError`;
    ``max_idle`` closes resources idle that long; ``max_uses`` retires a
    resource after that many acquisitions; an exception of a ``discard_on``
    type leaving an ``async with`` block discards the resource instead of
    returning it.
    """

    __slots__ = (
        "_check",
        "_clock",
        "_closed",
        "_counts",
        "_drained",
        "_factory",
        "_hooks",
        "_idle",
        "_in_use",
        "_orphans",
        "_reaper",
        "_size",
        "_waiters",
        "acquire_timeout",
        "discard_on",
        "max_idle",
        "max_size",
        "max_uses",
        "min_size",
        "name",
    )

    # Two signatures so that both an async and a sync factory infer T (one
    # union-typed parameter leaves mypy unable to choose).
    @overload
    def __init__(
        self, factory: Callable[[], Awaitable[T]], **options: Unpack[PoolOptions[T]]
    ) -> None: ...

    @overload
    def __init__(self, factory: Callable[[], T], **options: Unpack[PoolOptions[T]]) -> None: ...

    def __init__(
        self,
        factory: Callable[[], Awaitable[T] | T],
        *,
        close: Callable[[T], Awaitable[None] | None] | None = None,
        check: Callable[[T], Awaitable[bool] | bool] | None = None,
        min_size: int = 0,
        max_size: int = 10,
        acquire_timeout: float | None = None,
        max_idle: float | None = None,
        max_uses: int | None = None,
        discard_on: tuple[type[BaseException], ...] = (),
        clock: Clock | None = None,
        name: str = "pool",
    ) -> None:
        self.max_size = check_int("max_size", max_size, 1)
        self.min_size = check_int("min_size", min_size, 0)
        if self.min_size > self.max_size:
            raise ConfigError("min_size", f"must be <= max_size ({max_size}), got {min_size}")
        self.acquire_timeout = _seconds("acquire_timeout", acquire_timeout)
        self.max_idle = _seconds("max_idle", max_idle)
        self.max_uses = None if max_uses is None else check_int("max_uses", max_uses, 1)
        self.discard_on = discard_on
        self.name = name
        self._factory = factory
        self._hooks: CloseHooks[T] = CloseHooks(close, name)
        self._check = check
        self._clock: Clock = clock or SystemClock()
        self._size = 0
        self._idle: deque[Slot[T]] = deque()  # right end: most recently returned
        self._in_use: set[Slot[T]] = set()
        self._waiters: deque[asyncio.Future[Slot[T] | None]] = deque()
        self._orphans: set[asyncio.Task[Slot[T]]] = set()  # creations whose caller left
        self._reaper: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed = False
        self._counts = PoolStats()

    # -- public face ------------------------------------------------------------

    def acquire(self, timeout: float | _Unset | None = _UNSET) -> Lease[T]:
        """A lease on one resource: ``async with pool.acquire() as r`` or ``await``.

        ``timeout`` overrides ``acquire_timeout`` for this call (``None``: wait
        as long as it takes).
        """
        chosen = self.acquire_timeout if isinstance(timeout, _Unset) else timeout
        return Lease(self, _seconds("timeout", chosen))

    async def open(self) -> ResourcePool[T]:
        """Make resources until there are ``min_size``; raise the first factory error."""
        if self._closed:
            raise PoolClosedError(self.name)
        wanted = max(0, self.min_size - self._size)
        outcomes = await asyncio.gather(
            *(self._prefill() for _ in range(wanted)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return self

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> PoolStats:
        return dataclasses.replace(
            self._counts,
            size=self._size,
            idle=len(self._idle),
            in_use=len(self._in_use),
            waiting=sum(1 for w in self._waiters if not w.done()),
            closing=self._hooks.running,
            closed=self._hooks.closed,
        )

    async def aclose(self, grace: float | None = None) -> None:
        """Close the pool: fail waiters, close idle resources, wait for held ones.

        Held resources are closed as their holders return them. If some are
        still out after ``grace`` clock seconds, they are closed anyway (a
        warning is logged) and their holders' later release does nothing but
        free the slot. Close hooks still running then are cancelled.
        """
        deadline = None if grace is None else self._clock.now() + grace
        if not self._closed:
            self._closed = True
            self._fail_waiters()
            while self._idle:
                self._retire(self._idle.pop())
            await self._stop_reaper()
        if self._size > 0 and not await self._drain(deadline):
            self._force_close()
        await self._hooks.finish(lambda future: self._settled(future, deadline))

    async def __aenter__(self) -> ResourcePool[T]:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.stats()
        state = "closed" if self._closed else "open"
        return (
            f"ResourcePool({self.name!r}, {state}, size={s.size}/{self.max_size}, idle={s.idle}, "
            f"in_use={s.in_use}, waiting={s.waiting}, created={s.created}, closed={s.closed}, "
            f"failed={s.failed})"
        )

    # -- acquiring ----------------------------------------------------------------

    async def _acquire(self, allowance: float | None) -> Slot[T]:
        deadline = None if allowance is None else self._clock.now() + allowance
        try:
            slot = await self._claim(deadline)
            if slot is None or not await self._vet(slot, deadline):
                slot = await self._create(deadline)  # with the permit or the unhealthy one's slot
        except _Expired:
            self._counts.timeouts += 1
            raise PoolTimeoutError(self.name, allowance or 0.0) from None
        if slot.dead:  # closed by aclose(grace) while being checked
            self._release(slot)
            raise PoolClosedError(self.name)
        slot.uses += 1
        self._counts.acquired += 1
        return slot

    async def _claim(self, deadline: float | None) -> Slot[T] | None:
        """An idle resource, or None: a permit to create one (the slot is already counted)."""
        if self._closed:
            raise PoolClosedError(self.name)
        # A waiter exists only while nothing is free, so with one queued we queue
        # too; checking keeps arrival order even if a path ever broke that rule.
        if self._next_waiter(pop=False) is None:
            if self._idle:
                slot = self._idle.pop()
                self._in_use.add(slot)
                return slot
            if self._size < self.max_size:
                self._size += 1
                return None
        return await self._wait_turn(deadline)

    async def _wait_turn(self, deadline: float | None) -> Slot[T] | None:
        turn: asyncio.Future[Slot[T] | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if await self._settled(turn, deadline):
                return turn.result()  # raises PoolClosedError if the pool closed meanwhile
        except BaseException:
            self._pass_on(turn)
            raise
        self._pass_on(turn)
        raise _Expired

    def _pass_on(self, turn: asyncio.Future[Slot[T] | None]) -> None:
        """A waiter leaves: whatever it was handed goes to the next one (or back)."""
        if not turn.done():
            turn.cancel()  # skipped by whoever frees something next
            return
        if turn.cancelled() or turn.exception() is not None:
            return
        slot = turn.result()
        if slot is None:
            self._free_slot()
        else:
            self._release(slot)

    async def _vet(self, slot: Slot[T], deadline: float | None) -> bool:
        """True if ``slot`` may be handed out; False: it was closed, its slot is the caller's."""
        if self._check is None:
            return True
        try:
            healthy = await self._checked(slot.resource, deadline)
        except BaseException:  # cancelled or out of time mid-check: its state is unknown
            self._release(slot, discard=True)
            raise
        if healthy or slot.dead:
            return True  # a dead slot (closed by aclose meanwhile) is turned away by _acquire
        self._counts.unhealthy += 1
        self._in_use.discard(slot)
        self._hooks.close_soon(slot.resource)
        if self._closed:  # no replacement for a closed pool
            self._free_slot()
            raise PoolClosedError(self.name)
        return False

    async def _checked(self, resource: T, deadline: float | None) -> bool:
        assert self._check is not None
        try:
            verdict = self._check(resource)
        except Exception:
            _log.warning("pool %r: health check raised", self.name, exc_info=True)
            return False
        if not inspect.isawaitable(verdict):
            return bool(verdict)
        task = asyncio.ensure_future(verdict)
        task.add_done_callback(_retrieve)
        try:
            if not await self._settled(task, deadline):
                raise _Expired
        finally:
            task.cancel()  # no-op once done
        try:
            return bool(task.result())
        except Exception:
            _log.warning("pool %r: health check raised", self.name, exc_info=True)
            return False

    async def _create(self, deadline: float | None) -> Slot[T]:
        """Make a resource in the slot the caller holds; on any failure the slot is freed."""
        task = asyncio.ensure_future(self._make())
        task.add_done_callback(self._made)
        try:
            finished = await self._settled(task, deadline)
        except BaseException:
            self._abandon(task)
            raise
        if not finished:
            self._abandon(task)
            raise _Expired
        return task.result()  # the factory's own error, if it raised

    async def _make(self) -> Slot[T]:
        resource = await _resolve(self._factory())
        slot = Slot(resource)
        self._in_use.add(slot)
        self._counts.created += 1
        return slot

    def _made(self, task: asyncio.Task[Slot[T]]) -> None:
        """Done callback of every creation: failures free the slot, orphans' results go back."""
        if task.cancelled():
            self._free_slot()
        elif task.exception() is not None:
            self._counts.failed += 1
            self._free_slot()
        elif task in self._orphans:
            self._release(task.result())
        self._orphans.discard(task)

    def _abandon(self, task: asyncio.Task[Slot[T]]) -> None:
        """The caller of a creation left (cancelled, timed out)."""
        if not task.done():
            self._orphans.add(task)  # _made returns the resource if it still arrives
            task.cancel()
        elif not task.cancelled() and task.exception() is None:
            self._release(task.result())

    async def _prefill(self) -> None:
        if self._closed or self._size >= self.min_size:
            return
        self._size += 1
        self._release(await self._create(None))

    # -- giving back ----------------------------------------------------------------

    def _release(self, slot: Slot[T], *, discard: bool = False) -> None:
        if slot not in self._in_use:
            return  # already given back
        self._in_use.remove(slot)
        if slot.dead:
            self._free_slot()
        elif discard or self._closed or self._worn_out(slot):
            self._retire(slot)
        elif (waiter := self._next_waiter(pop=True)) is not None:
            self._in_use.add(slot)
            waiter.set_result(slot)
        else:
            slot.idle_since = self._clock.now()
            self._idle.append(slot)
            self._watch_idle()

    def _worn_out(self, slot: Slot[T]) -> bool:
        return self.max_uses is not None and slot.uses >= self.max_uses

    def _retire(self, slot: Slot[T]) -> None:
        """Close a resource that is neither idle nor held any more, and free its slot."""
        self._hooks.close_soon(slot.resource)
        self._free_slot()

    def _free_slot(self) -> None:
        """A slot is free: the next waiter gets it as a permit to create, else the pool shrinks."""
        if not self._closed and (waiter := self._next_waiter(pop=True)) is not None:
            waiter.set_result(None)
            return
        self._size -= 1
        if self._size == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _next_waiter(self, *, pop: bool) -> asyncio.Future[Slot[T] | None] | None:
        waiters = self._waiters
        while waiters and waiters[0].done():
            waiters.popleft()  # cancelled or timed out while waiting
        if not waiters:
            return None
        return waiters.popleft() if pop else waiters[0]

    async def _settled(self, future: asyncio.Future[Any], deadline: float | None) -> bool:
        """Wait for ``future`` until ``deadline``; True if it is done. Never raises its error."""
        if deadline is None:
            await asyncio.wait((future,))
            return True
        remaining = max(0.0, deadline - self._clock.now())
        return await settled_within(future, remaining, self._clock)

    # -- closing ------------------------------------------------------------------------

    def _fail_waiters(self) -> None:
        while (waiter := self._next_waiter(pop=True)) is not None:
            waiter.set_exception(PoolClosedError(self.name))

    async def _drain(self, deadline: float | None) -> bool:
        """Wait until every slot is free (held resources returned); False at the deadline."""
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        return await self._settled(self._drained, deadline)

    def _force_close(self) -> None:
        _log.warning(
            "pool %r: closing %d resources still held at the aclose() deadline",
            self.name,
            len(self._in_use),
        )
        for slot in self._in_use:
            if not slot.dead:
                slot.dead = True
                self._hooks.close_soon(slot.resource)

    # -- idle eviction ------------------------------------------------------------------

    def _watch_idle(self) -> None:
        if self.max_idle is not None and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Sleep until the longest-idle resource expires, evict, repeat; end when none can go."""
        while (wait := self._evict_idle()) is not None:
            await self._clock.sleep(wait)

    def _evict_idle(self) -> float | None:
        """Close expired idle resources down to ``min_size``; seconds until the next may go."""
        assert self.max_idle is not None
        now = self._clock.now()
        while self._idle and self._size > self.min_size:
            due = self._idle[0].idle_since + self.max_idle - now
            if due > 0:
                return due
            self._retire(self._idle.popleft())
        return None

    async def _stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper


def _seconds(field: str, value: float | None) -> float | None:
    return None if value is None else check_duration(field, value)
