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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypedDict, TypeVar, Unpack, cast, overload

from .._clock import Clock, SystemClock
from .._errors import ConfigError, PoolClosedError, PoolError, PoolTimeoutError
from ..flow import settled_within

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


class PoolOptions(TypedDict, Generic[T], total=False):
    """The keyword options of :class:`ResourcePool` (for code that builds pools from config)."""

    close: Callable[[T], Awaitable[None] | None] | None
    check: Callable[[T], Awaitable[bool] | bool] | None
    min_size: int
    max_size: int
    acquire_timeout: float | None
    max_idle: float | None
    max_uses: int | None
    discard_on: tuple[type[BaseException], ...]
    clock: Clock | None
    name: str


@dataclasses.dataclass(slots=True)
class PoolStats:
    """A snapshot of one pool: its gauges now and its counters since it was made."""

    size: int = 0
    """Resources idle, held, or being created (never above ``max_size``)."""
    idle: int = 0
    in_use: int = 0
    waiting: int = 0
    closing: int = 0
    """Close hooks still running."""
    created: int = 0
    closed: int = 0
    failed: int = 0
    """Factory calls that raised."""
    unhealthy: int = 0
    """Resources the health check turned away (closed and replaced)."""
    timeouts: int = 0
    acquired: int = 0


class _Slot(Generic[T]):
    """One live resource and its bookkeeping."""

    __slots__ = ("dead", "idle_since", "resource", "uses")

    def __init__(self, resource: T) -> None:
        self.resource = resource
        self.uses = 0
        self.idle_since = 0.0
        self.dead = False  # closed by aclose() while held; its holder's release only frees the slot


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
        "_close",
        "_closed",
        "_closing",
        "_counts",
        "_drained",
        "_factory",
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
        self.max_size = _whole("max_size", max_size, 1)
        self.min_size = _whole("min_size", min_size, 0)
        if self.min_size > self.max_size:
            raise ConfigError("min_size", f"must be <= max_size ({max_size}), got {min_size}")
        self.acquire_timeout = _seconds("acquire_timeout", acquire_timeout)
        self.max_idle = _seconds("max_idle", max_idle)
        self.max_uses = None if max_uses is None else _whole("max_uses", max_uses, 1)
        self.discard_on = discard_on
        self.name = name
        self._factory = factory
        self._close = close
        self._check = check
        self._clock: Clock = clock or SystemClock()
        self._size = 0
        self._idle: deque[_Slot[T]] = deque()  # right end: most recently returned
        self._in_use: set[_Slot[T]] = set()
        self._waiters: deque[asyncio.Future[_Slot[T] | None]] = deque()
        self._orphans: set[asyncio.Task[_Slot[T]]] = set()  # creations whose caller left
        self._closing: set[asyncio.Future[None]] = set()
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
            closing=len(self._closing),
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
        await self._finish_closes(deadline)

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

    async def _acquire(self, allowance: float | None) -> _Slot[T]:
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

    async def _claim(self, deadline: float | None) -> _Slot[T] | None:
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

    async def _wait_turn(self, deadline: float | None) -> _Slot[T] | None:
        turn: asyncio.Future[_Slot[T] | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if await self._settled(turn, deadline):
                return turn.result()  # raises PoolClosedError if the pool closed meanwhile
        except BaseException:
            self._pass_on(turn)
            raise
        self._pass_on(turn)
        raise _Expired

    def _pass_on(self, turn: asyncio.Future[_Slot[T] | None]) -> None:
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

    async def _vet(self, slot: _Slot[T], deadline: float | None) -> bool:
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
        self._close_soon(slot.resource)
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

    async def _create(self, deadline: float | None) -> _Slot[T]:
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

    async def _make(self) -> _Slot[T]:
        resource = await _resolve(self._factory())
        slot = _Slot(resource)
        self._in_use.add(slot)
        self._counts.created += 1
        return slot

    def _made(self, task: asyncio.Task[_Slot[T]]) -> None:
        """Done callback of every creation: failures free the slot, orphans' results go back."""
        if task.cancelled():
            self._free_slot()
        elif task.exception() is not None:
            self._counts.failed += 1
            self._free_slot()
        elif task in self._orphans:
            self._release(task.result())
        self._orphans.discard(task)

    def _abandon(self, task: asyncio.Task[_Slot[T]]) -> None:
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

    def _release(self, slot: _Slot[T], *, discard: bool = False) -> None:
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

    def _worn_out(self, slot: _Slot[T]) -> bool:
        return self.max_uses is not None and slot.uses >= self.max_uses

    def _retire(self, slot: _Slot[T]) -> None:
        """Close a resource that is neither idle nor held any more, and free its slot."""
        self._close_soon(slot.resource)
        self._free_slot()

    def _free_slot(self) -> None:
        """A slot is free: the next waiter gets it as a permit to create, else the pool shrinks."""
        if not self._closed and (waiter := self._next_waiter(pop=True)) is not None:
            waiter.set_result(None)
            return
        self._size -= 1
        if self._size == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _next_waiter(self, *, pop: bool) -> asyncio.Future[_Slot[T] | None] | None:
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

    def _close_soon(self, resource: T) -> None:
        """Run the close hook; an async one runs in the background, tracked for aclose()."""
        try:
            outcome = None if self._close is None else self._close(resource)
        except Exception:
            _log.warning("pool %r: close hook raised", self.name, exc_info=True)
            outcome = None
        if not inspect.isawaitable(outcome):
            self._counts.closed += 1
            return
        task = asyncio.ensure_future(outcome)
        self._closing.add(task)
        task.add_done_callback(self._close_done)

    def _close_done(self, task: asyncio.Future[None]) -> None:
        self._closing.discard(task)
        self._counts.closed += 1
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.warning("pool %r: close hook raised", self.name, exc_info=error)

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
                self._close_soon(slot.resource)

    async def _finish_closes(self, deadline: float | None) -> None:
        if not self._closing:
            return
        everything = asyncio.gather(*self._closing, return_exceptions=True)
        if not await self._settled(everything, deadline):
            everything.cancel()  # cancels each close hook still running
            with contextlib.suppress(asyncio.CancelledError):
                await everything

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


class Lease(Generic[T]):
    """One hold on a pooled resource, from :meth:`ResourcePool.acquire`.

    As a context manager it yields the resource and gives it back on exit,
    whatever happens in the block; awaited, it returns itself, and you call
    :meth:`release` (or :meth:`discard`) when done::

        async with pool.acquire() as conn:
            ...

        lease = await pool.acquire()
        try:
            use(lease.resource)
        finally:
            lease.release()
    """

    __slots__ = ("_pool", "_slot", "_taken", "_timeout")

    def __init__(self, pool: ResourcePool[T], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._slot: _Slot[T] | None = None
        self._taken = False

    @property
    def resource(self) -> T:
        if self._slot is None:
            raise PoolError(self._pool.name, "this lease holds no resource (released, or unused)")
        return self._slot.resource

    @property
    def held(self) -> bool:
        return self._slot is not None

    def release(self) -> None:
        """Give the resource back for reuse; a second call does nothing."""
        self._give_back(discard=False)

    def discard(self) -> None:
        """Give the resource back to be closed (it is broken); the pool makes a new one on need."""
        self._give_back(discard=True)

    def _give_back(self, *, discard: bool) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            self._pool._release(slot, discard=discard)

    async def _take(self) -> Lease[T]:
        if self._taken:
            raise PoolError(self._pool.name, "a lease is used once; call acquire() again")
        self._taken = True
        self._slot = await self._pool._acquire(self._timeout)
        return self

    def __await__(self) -> Generator[Any, None, Lease[T]]:
        return self._take().__await__()

    async def __aenter__(self) -> T:
        await self._take()
        return self.resource

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._give_back(discard=isinstance(exc, self._pool.discard_on))

    def __repr__(self) -> str:
        state = f"holding {self._slot.resource!r}" if self._slot is not None else "not holding"
        return f"Lease(pool={self._pool.name!r}, {state})"


def _whole(field: str, value: int, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(field, f"must be a whole number >= {least}, got {value!r}")
    return value


def _seconds(field: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(field, f"must be seconds >= 0 or None, got {value!r}")
    return float(value)
