"""A lease: one holder's hold on a pooled resource, given back on every exit."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._errors import PoolError

if TYPE_CHECKING:
    from ._pool import ResourcePool
    from ._pool_parts import Slot

__all__ = ["Lease"]

T = TypeVar("T")


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
        self._slot: Slot[T] | None = None
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
