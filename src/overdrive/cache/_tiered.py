"""Tiers composed: read L1 then each L2 in turn, fill upward, write downward in the background.

L1 holds live Python values on the monotonic clock; L2 tiers hold codec bytes
on the wall clock so processes and restarts agree on freshness. A failing L2
tier is skipped and counted (fail open): the caller still gets L1 or a miss.
Keys are any hashable while only L1 is involved, bytes once there are L2
tiers (they are written to files and to Redis).

>>> import asyncio
>>> from overdrive.cache import MemoryCache
>>> async def main() -> object:
...     cache = TieredCache(MemoryCache(1 << 20))
...     await cache.set(b"k", {"answer": 42}, ttl=60)
...     found = await cache.get(b"k")
...     return found.value if found else None
>>> asyncio.run(main())
{'answer': 42}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import CacheError
from ._codec import Codec
from ._memory import MemoryCache
from ._tier import Entry, Tier

if TYPE_CHECKING:
    from ..coalesce import RedisLease

T = TypeVar("T")
# Told of every tier failure (tier name, op, the error): metrics and the log listen.
FaultHook = Callable[[str, str, CacheError], None]

__all__ = ["Found", "TieredCache"]


@dataclass(slots=True, frozen=True)
class Found:
    """A cache lookup's answer: ``fresh`` False means stale (serve, then refresh)."""

    value: Any
    fresh: bool
    source: str


class TieredCache:
    """One cache over an L1 memory tier and any number of shared L2 tiers."""

    __slots__ = ("_codec", "_pending", "_wall", "errors", "lease", "memory", "on_fault", "tiers")

    def __init__(
        self,
        memory: MemoryCache[Any],
        tiers: Sequence[Tier] = (),
        codec: Codec | None = None,
        wall: Callable[[], float] = time.time,
        lease: RedisLease | None = None,
    ) -> None:
        self.memory = memory
        self.tiers = list(tiers)
        self.lease = lease
        self._codec = codec or Codec()
        self._wall = wall
        self._pending: set[asyncio.Task[None]] = set()
        self.errors: dict[str, int] = {}
        self.on_fault: FaultHook | None = None

    async def get(self, key: Hashable) -> Found | None:
        """The freshest usable value for ``key``, looking deeper only on a miss."""
        item = self.memory.get_entry(key)
        if item is not None:
            return Found(item.value, item.fresh(self.memory.now()), "memory")
        if not self.tiers:
            return None
        shared = _shared(key)
        for depth, tier in enumerate(self.tiers):
            entry = await self._read(tier, shared)
            if entry is not None:
                return self._promote(shared, entry, tier, depth)
        return None

    async def set(
        self,
        key: Hashable,
        value: Any,
        ttl: float,
        *,
        stale: float = 0.0,
        tags: tuple[str, ...] = (),
        wait: bool = False,
        size: int | None = None,
    ) -> None:
        """Store in L1 now; write the L2 tiers in the background (or, with ``wait``, now).

        ``size`` is the L1 charge when the caller knows it (see ``MemoryCache.set``).
        """
        self.memory.set(key, value, size, ttl=ttl, stale=stale, tags=tags)
        if not self.tiers:
            return
        shared = _shared(key)
        try:
            data = self._codec.encode(shared, value)
        except CacheError as exc:  # not data-only and no secret: it stays in this process
            self._count("codec", "encode", exc)
            return
        now = self._wall()
        entry = Entry(data, now + ttl, now + ttl + stale, tags)
        if wait:
            for tier in self.tiers:
                await self._guard(tier, tier.set(shared, entry), "write")
        else:
            self._write_behind(shared, entry, self.tiers)

    async def across_processes(
        self, key: Hashable, compute: Callable[[], Awaitable[T]], read: Callable[[Any], T | None]
    ) -> T:
        """Run ``compute`` once across every process sharing the Redis lease.

        ``compute`` must store its result with ``set(..., wait=True)``; the
        processes that did not compute read it back, converted by ``read``
        (None: not usable, so they compute it themselves).
        Without a lease (or with Redis down) ``compute`` simply runs here.
        """
        if self.lease is None:
            return await compute()

        async def stored() -> T | None:
            found = await self.get(key)
            return None if found is None else read(found.value)

        return await self.lease.run(_shared(key), compute, stored)

    async def delete(self, key: Hashable) -> None:
        self.memory.delete(key)
        if not self.tiers:
            return
        shared = _shared(key)
        for tier in self.tiers:
            await self._guard(tier, tier.delete(shared), "delete")

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Drop every entry carrying any of ``tags`` from every tier; return the count."""
        wanted = tuple(tags)
        removed = self.memory.delete_tags(wanted)
        for tier in self.tiers:
            removed += await self._guard(tier, tier.delete_tags(wanted), "delete") or 0
        return removed

    async def flush(self) -> None:
        """Wait for background writes (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    async def close_idle(self) -> None:
        """The event loop the shared tiers' connections belong to is ending: close them there."""
        await self.flush()
        for tier in self.tiers:
            await self._guard(tier, tier.close_idle(), "close")
        if self.lease is not None:
            await self.lease.close_idle()

    def forget_loop(self) -> None:
        """The event loop the shared tiers' connections and writes ran on is gone."""
        self._pending.clear()  # tasks of a closed loop never run again
        for tier in self.tiers:
            tier.forget_loop()
        if self.lease is not None:
            self.lease.forget_loop()

    async def aclose(self) -> None:
        await self.flush()
        for tier in self.tiers:
            await self._guard(tier, tier.aclose(), "close")
        if self.lease is not None:
            await self.lease.aclose()

    def summary(self) -> dict[str, Any]:
        """The memory tier's figures plus the shared tiers' error counts."""
        return {
            **self.memory.summary(),
            "tiers": [t.name for t in self.tiers],
            "errors": self.errors,
        }

    def _promote(self, key: bytes, entry: Entry, tier: Tier, depth: int) -> Found | None:
        try:
            value = self._codec.decode(key, entry.value)
        except CacheError as exc:
            self._count(tier.name, "decode", exc)
            return None
        now = self._wall()
        self.memory.set(
            key,
            value,
            ttl=entry.expires_at - now,
            stale=entry.stale_until - max(now, entry.expires_at),
        )
        if depth:  # fill the shallower shared tiers too
            self._write_behind(key, entry, self.tiers[:depth])
        return Found(value, entry.fresh(now), tier.name)

    def _write_behind(self, key: bytes, entry: Entry, tiers: Sequence[Tier]) -> None:
        for tier in tiers:
            task = asyncio.ensure_future(self._guard(tier, tier.set(key, entry), "write"))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _read(self, tier: Tier, key: bytes) -> Entry | None:
        entry = await self._guard(tier, tier.get(key), "read")
        return entry if entry is not None and entry.usable(self._wall()) else None

    async def _guard(self, tier: Tier, work: Any, op: str) -> Any:
        try:
            return await work
        except CacheError as exc:
            self._count(tier.name, op, exc)
            return None

    def _count(self, tier: str, op: str, error: CacheError) -> None:
        self.errors[tier] = self.errors.get(tier, 0) + 1
        if self.on_fault is not None:
            self.on_fault(tier, op, error)

    def __repr__(self) -> str:
        names = ["memory", *(t.name for t in self.tiers)]
        return (
            f"TieredCache(tiers={names}, pending_writes={len(self._pending)}, errors={self.errors})"
        )


def _shared(key: Hashable) -> bytes:
    """``key`` as the L2 tiers take it: they store keys as bytes, in files and in Redis."""
    if isinstance(key, bytes):
        return key
    raise TypeError(f"a cache with shared tiers takes bytes keys, not {type(key).__qualname__}")
