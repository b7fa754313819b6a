"""L2 in Redis: one cache shared by every process on every machine.

Layout (``<ns>`` is the namespace, ``<s>`` the key's shard, 0 to 63)::

    od:<ns>:k:{<ns>.<s>}:<key>     the entry, packed: times, tags and value in one
                                   string, so ``get`` is a single GET; Redis
                                   expires it at stale_until
    od:<ns>:tag:{<ns>.<s>}:<tag>   a set of the shard's entry keys carrying
                                   ``tag``; it lives as long as its longest-lived
                                   member

The braces are a Redis Cluster hash tag: an entry and the tag sets that name
it sit in one slot, so storing it with its tags, or deleting a tag's entries,
is one atomic script even on a cluster, while the 64 shards of a namespace
spread its keys over 64 slots (a single server ignores the braces). A tag's
members are split over the shards, so :meth:`RedisTier.delete_tags` runs one
script per shard, all in one pipeline: each shard's deletion is atomic, and an
entry stored meanwhile is either deleted or stays listed in its tag set.

A cache must cost nothing when Redis is gone. Every operation is bounded by
``timeout``; a failure raises :class:`~overdrive.CacheError` and marks the
tier down for ``backoff`` seconds, during which calls raise at once without
touching the network (counted in ``skipped_while_down``). The first call after
the backoff tries Redis again, so sharing resumes by itself when it returns.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar, cast

from .._clock import Clock, SystemClock
from .._errors import CacheError
from .._redis import (
    Breaker,
    ScanTarget,
    close_idle,
    connect,
    forget_loop,
    namespace_prefix,
    safe_url,
    scan_page,
    scan_targets,
)
from ._tier import Entry, Tier

__all__ = ["RedisTier"]

T = TypeVar("T")

# version, expires_at, stale_until, tag count; then (u16 length, utf-8) per tag; then the value.
_HEADER = struct.Struct(">BddH")
_TAG_LEN = struct.Struct(">H")
_LAYOUT = 1

# Slots a namespace's keys spread over (see the module docstring); every tag
# deletion costs one small script per shard.
_SHARDS = 64

# Sets the entry, adds it to each tag set, and stretches each tag set's life to
# cover it, atomically (KEYS[1] entry, KEYS[2..] tag sets; ARGV value, ttl ms).
_SET_SCRIPT = """
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
    redis.call('SADD', KEYS[i], KEYS[1])
    if redis.call('PTTL', KEYS[i]) < ttl then
        redis.call('PEXPIRE', KEYS[i], ttl)
    end
end
return 1
"""

# Deletes every entry listed in the tag sets, then the sets, atomically: an
# entry stored meanwhile cannot be left out of its set (KEYS: one shard's tag
# sets). The entries are not declared, but share the sets' slot: a cluster
# node serves them. Returns how many entries were deleted.
_DELETE_TAGS_SCRIPT = """
local deleted = 0
for i = 1, #KEYS do
    for _, entry in ipairs(redis.call('SMEMBERS', KEYS[i])) do
        deleted = deleted + redis.call('DEL', entry)
    end
end
redis.call('DEL', unpack(KEYS))
return deleted
"""


def _pack(entry: Entry) -> bytes:
    parts = [_HEADER.pack(_LAYOUT, entry.expires_at, entry.stale_until, len(entry.tags))]
    for tag in entry.tags:
        raw = tag.encode()
        parts += (_TAG_LEN.pack(len(raw)), raw)
    parts.append(entry.value)
    return b"".join(parts)


def _unpack(data: bytes) -> Entry:
    layout, expires_at, stale_until, count = _HEADER.unpack_from(data)
    if layout != _LAYOUT:
        raise ValueError(f"unknown entry layout {layout}")
    offset = _HEADER.size
    tags = []
    for _ in range(count):
        (size,) = _TAG_LEN.unpack_from(data, offset)
        offset += _TAG_LEN.size
        tags.append(data[offset : offset + size].decode())
        offset += size
    return Entry(data[offset:], expires_at, stale_until, tuple(tags))


class RedisTier(Tier):
    """A shared cache tier in Redis that fails open and recovers by itself.

    Redis expires each entry at its ``stale_until`` (set as a relative TTL from
    ``wall``, so clock skew between hosts and Redis does not shorten it).

    >>> import asyncio, time
    >>> async def demo(url):
    ...     tier = RedisTier(url, namespace="tenant-a")
    ...     now = time.time()
    ...     await tier.set(b"k", Entry(b"v", expires_at=now + 60, stale_until=now + 120))
    ...     entry = await tier.get(b"k")
    ...     await tier.aclose()
    ...     return entry.value
    >>> asyncio.run(demo("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
    b'v'
    """

    __slots__ = ("_client", "_namespace", "_prefix", "_set_script", "_url", "_wall", "breaker")

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        wall: Callable[[], float] = time.time,
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self._prefix = namespace_prefix(namespace)
        self._namespace = namespace.encode()
        self._url = safe_url(url)
        self._wall = wall
        self._client = connect(url, timeout)
        self._set_script = self._client.register_script(_SET_SCRIPT)
        clock = clock or SystemClock()
        self.breaker = Breaker(
            self.name, timeout=timeout, backoff=backoff, clock=clock, client=self._client
        )

    @property
    def errors(self) -> int:
        return self.breaker.errors

    @property
    def skipped_while_down(self) -> int:
        return self.breaker.skipped_while_down

    async def get(self, key: bytes) -> Entry | None:
        reply = await self._run(lambda: self._client.get(self._entry_key(key)))
        data = cast("bytes | None", reply)  # decode_responses is off: replies are bytes
        if data is None:
            return None
        try:
            entry = _unpack(data)
        except (struct.error, ValueError) as exc:
            raise CacheError(self.name, f"malformed entry: {exc}") from exc
        # Redis's expiry runs on its clock; ours decides what is still usable.
        return entry if entry.usable(self._wall()) else None

    async def set(self, key: bytes, entry: Entry) -> None:
        entry_key = self._entry_key(key)
        ttl_ms = int((entry.stale_until - self._wall()) * 1000)
        if ttl_ms <= 0:
            await self._run(lambda: self._client.delete(entry_key))  # replace: nothing usable
            return
        shard = _shard(key)
        tag_keys = [self._tag_key(tag, shard) for tag in dict.fromkeys(entry.tags)]
        keys = [entry_key, *tag_keys]
        await self._run(lambda: self._set_script(keys=keys, args=[_pack(entry), ttl_ms]))

    async def delete(self, key: bytes) -> bool:
        removed: int = await self._run(lambda: self._client.delete(self._entry_key(key)))
        return removed > 0

    async def delete_tags(self, tags: Iterable[str]) -> int:
        unique = list(dict.fromkeys(tags))
        if not unique:
            return 0
        return await self._run(lambda: self._delete_tags(unique))

    async def clear(self) -> None:
        # Page by page, each round trip under its own deadline: a big namespace
        # takes many short steps instead of one long one that would time out.
        # A cluster is scanned node by node: a SCAN sees one node's keys.
        match = _glob_escape(self._prefix) + b"*"
        for target in await self._run(lambda: scan_targets(self._client)):
            cursor = await self._clear_page(target, 0, match)
            while cursor != 0:
                cursor = await self._clear_page(target, cursor, match)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def close_idle(self) -> None:
        await close_idle(self._client)

    def forget_loop(self) -> None:
        self.breaker.forget_loop()
        forget_loop(self._client)

    async def _run(self, command: Callable[[], Awaitable[T]]) -> T:
        if self.breaker.skip():
            raise CacheError(self.name, "marked down after a failure; retrying after the backoff")
        return await self.breaker.call(command())

    async def _clear_page(self, target: ScanTarget, cursor: int, match: bytes) -> int:
        """Unlink one SCAN page of this namespace's keys; the next cursor (0: done)."""
        page = await self._run(lambda: scan_page(self._client, target, cursor, match, 500))
        next_cursor, keys = page
        # Lease keys share the prefix but are not cache entries: leave them to their owners.
        doomed = [key for key in keys if not key.startswith(self._prefix + b"lease:")]
        if doomed:
            # On a cluster redis-py splits this by slot, one UNLINK per slot.
            await self._run(lambda: self._client.unlink(*doomed))
        return next_cursor

    async def _delete_tags(self, tags: list[str]) -> int:
        # EVAL, not EVALSHA: a pipeline cannot load a script the server lacks.
        # A cluster pipeline sends each node its shards' scripts at once.
        pipe = self._client.pipeline(transaction=False)
        for shard in range(_SHARDS):
            tag_keys = [self._tag_key(tag, shard) for tag in tags]
            pipe.eval(_DELETE_TAGS_SCRIPT, len(tag_keys), *tag_keys)
        deleted: list[int] = await pipe.execute()
        return sum(deleted)

    def _slot_tag(self, shard: int) -> bytes:
        return b"{%s.%d}:" % (self._namespace, shard)

    def _entry_key(self, key: bytes) -> bytes:
        return self._prefix + b"k:" + self._slot_tag(_shard(key)) + key

    def _tag_key(self, tag: str, shard: int) -> bytes:
        return self._prefix + b"tag:" + self._slot_tag(shard) + tag.encode()

    def __repr__(self) -> str:
        return (
            f"RedisTier({self._url!r}, prefix={self._prefix!r}, down={self.breaker.down}, "
            f"errors={self.errors}, skipped_while_down={self.skipped_while_down})"
        )


def _shard(key: bytes) -> int:
    # Stable across processes and versions (unlike hash()), and cheap.
    return zlib.crc32(key) % _SHARDS


def _glob_escape(raw: bytes) -> bytes:
    for special in (b"\\", b"*", b"?", b"[", b"]"):
        raw = raw.replace(special, b"\\" + special)
    return raw
