"""The cache stage, once: what the engine and ``@cached`` both do around a cache.

A lookup finds an entry fresh, or stale (served while one background refresh
runs); a miss is computed once (in this process through a
:class:`~overdrive.coalesce.Coalescer` that the refresh shares, across
processes through the cache's Redis lease); a value is stored with its TTL
jittered down, so entries written in one burst do not expire in one burst.
``@cached`` keeps its memory hit inline in its wrappers (one call less per
hit); everything past that hit comes here, as every engine call does.

>>> import asyncio
>>> from overdrive.cache import MemoryCache, TieredCache
>>> async def main() -> tuple[int, bool]:
...     stage: CacheStage[int] = CacheStage(TieredCache(MemoryCache(1 << 20)))
...     async def compute() -> int:
...         await stage.store(b"k", 42, ttl=60)
...         return 42
...     await stage.compute_once(b"k", compute)
...     found = await stage.lookup(b"k")
...     return found.value, found.fresh
>>> asyncio.run(main())
(42, True)
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from sys import getsizeof
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from ..coalesce import Coalescer
from ._memory import ENTRY_OVERHEAD

if TYPE_CHECKING:
    from ._tiered import Found, TieredCache

__all__ = ["CacheStage", "StoredAnswer"]

T = TypeVar("T")
Compute = Callable[[], Coroutine[Any, Any, T]]

DEFAULT_JITTER = 0.1


class StoredAnswer(NamedTuple):
    """An upstream's answer as the cache keeps it: ``body`` is its bytes, or a stream's chunks.

    ``stored_at`` is wall-clock time, so an answer's age (``max_age``) means
    the same in every process sharing the cache.

    >>> answer = StoredAnswer(200, [b"data: 1\\n\\n", b"data: [DONE]\\n\\n"], "primary", 0.0)
    >>> answer.content()
    b'data: 1\\n\\ndata: [DONE]\\n\\n'
    >>> StoredAnswer.of((200, b"{}", "primary"))  # as an older version stored it
    StoredAnswer(status=200, body=b'{}', upstream='primary', stored_at=-inf)
    """

    status: int
    body: bytes | list[bytes]
    upstream: str
    stored_at: float

    @classmethod
    def of(cls, value: object) -> StoredAnswer:
        """``value`` as a record; older versions stored a plain 3- or 4-item tuple or list."""
        if isinstance(value, StoredAnswer):
            return value
        if isinstance(value, tuple | list) and len(value) in (3, 4):
            status, body, upstream, *stored_at = value
            # Without a time of its own an entry counts as infinitely old for ``max_age``.
            at = float(stored_at[0]) if stored_at else -math.inf
            return cls(status, body if isinstance(body, bytes) else list(body), upstream, at)
        raise TypeError(f"not a stored answer: {type(value).__qualname__}")

    def content(self) -> bytes:
        """The whole body (a stream's chunks joined)."""
        body = self.body
        return body if isinstance(body, bytes) else b"".join(body)

    def chunks(self) -> list[bytes]:
        """The body as a stream's chunks (a whole body is one chunk)."""
        body = self.body
        return list(body) if isinstance(body, list) else [body]

    def charge(self, key: Hashable) -> int:
        """The bytes the memory tier books for it under ``key``: what a deep walk would count."""
        chunks = sum(map(getsizeof, self.body)) if isinstance(self.body, list) else 0
        return (
            getsizeof(self) + sum(map(getsizeof, self)) + chunks + getsizeof(key) + ENTRY_OVERHEAD
        )


class CacheStage(Generic[T]):
    """Lookup, refresh once, compute once and store, over one cache; ``T`` is what computing yields.

    ``rng`` draws the TTL jitter (inject a seeded one for repeatable runs);
    ``wall`` dates answers for ``max_age``; ``on_refresh_error`` hears of a
    background refresh that failed (the stale entry keeps being served).
    """

    __slots__ = ("_on_refresh_error", "_refreshing", "cache", "flight", "jitter", "rng", "wall")

    def __init__(
        self,
        cache: TieredCache,
        *,
        jitter: float = DEFAULT_JITTER,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
        on_refresh_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.cache = cache
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.wall = wall
        # One flight for misses and refreshes: a miss during a refresh joins it.
        self.flight: Coalescer[T] = Coalescer()
        self._refreshing: set[Hashable] = set()
        self._on_refresh_error = on_refresh_error

    def lookup(self, key: Hashable, max_age: float | None = None) -> Awaitable[Found | None]:
        """The entry for ``key``, fresh or stale (``found.fresh``), or None.

        With ``max_age``, only a :class:`StoredAnswer` stored at most that
        many seconds ago counts.
        """
        if max_age is None:
            return self.cache.get(key)  # the cache's own coroutine: no layer of ours around it
        return self._young(key, max_age)

    async def _young(self, key: Hashable, max_age: float) -> Found | None:
        found = await self.cache.get(key)
        if found is None or self.wall() - StoredAnswer.of(found.value).stored_at > max_age:
            return None
        return found

    async def fresh_answer(
        self, key: Hashable, max_age: float | None = None
    ) -> StoredAnswer | None:
        """The :class:`StoredAnswer` for ``key`` while fresh, else None: what a stream replays."""
        found = await self.lookup(key, max_age)
        return None if found is None or not found.fresh else StoredAnswer.of(found.value)

    def refresh_once(self, key: Hashable, compute: Compute[T]) -> None:
        """Recompute a stale entry in the background, once however many callers see it stale."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        task = asyncio.ensure_future(self.flight.run(key, compute))
        task.add_done_callback(lambda done: self._refreshed(key, done))

    def _refreshed(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        self._refreshing.discard(key)
        if done.cancelled():
            return
        error = done.exception()  # retrieved either way, so asyncio does not log it as lost
        if error is not None and self._on_refresh_error is not None:
            self._on_refresh_error(error)

    def compute_once(
        self, key: Hashable, compute: Compute[T], read: Callable[[Any], T | None] | None = None
    ) -> Awaitable[tuple[T, bool]]:
        """``(value, joined)``: ``compute`` runs once for every caller of ``key`` in flight.

        With ``read``, and a cache sharing a Redis lease, once across
        processes too: ``compute`` must :meth:`store` its value, which the
        other processes read back and convert with ``read``.
        """
        cache = self.cache
        if read is None or cache.lease is None:
            return self.flight.run(key, compute)
        return self.flight.run(key, lambda: cache.across_processes(key, compute, read))

    def store(
        self,
        key: Hashable,
        value: Any,
        ttl: float,
        *,
        stale: float = 0.0,
        tags: tuple[str, ...] = (),
        wait: bool | None = None,
    ) -> Awaitable[None]:
        """Store ``value`` for ``ttl`` less up to ``jitter`` of it, then ``stale`` more seconds.

        ``wait`` writes the shared tiers before returning; by default it does
        when processes share a lease, as they read the value back from Redis.
        """
        cache = self.cache
        shared = cache.lease is not None if wait is None else wait
        size = value.charge(key) if value.__class__ is StoredAnswer else None
        return cache.set(
            key, value, self.lifetime(ttl), stale=stale, tags=tags, wait=shared, size=size
        )

    def remember(
        self,
        key: Hashable,
        value: Any,
        ttl: float,
        *,
        stale: float = 0.0,
        tags: tuple[str, ...] = (),
    ) -> None:
        """Store in this process's memory only: for sync callers, and values not to share."""
        self.cache.memory.set(key, value, ttl=self.lifetime(ttl), stale=stale, tags=tags)

    def lifetime(self, ttl: float) -> float:
        """``ttl`` less a random share of it up to ``jitter``."""
        return ttl * (1.0 - self.jitter * self.rng.random())

    def __repr__(self) -> str:
        return f"CacheStage(refreshing={len(self._refreshing)}, flight={self.flight!r})"
