"""Semantic entries shared through Redis: one stream per namespace and model, each index follows it.

A process that stores a new entry appends it (scope, answer key, question,
vector, expiry) to the stream ``od:<ns>:semantic:<model>``; every process
reads what it has not yet seen before it looks up, so a paraphrase stored by
one replica is a semantic hit in another. The answers themselves live in the
cache's shared tiers under their exact keys; an entry only points at one.

The stream is trimmed to about ``max_entries`` records, so it is bounded
like each process's index; a new process reads what is there to start warm.
Every command names the one stream, so a Redis Cluster needs nothing more:
each stream lives on the node of its slot.

Redis failing costs sharing, never a call: every command is bounded by
``timeout`` behind a breaker, and failures raise :class:`~overdrive.CacheError`
for the tier to count.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from ..._clock import Clock, SystemClock
from ..._errors import CacheError
from ..._redis import (
    Breaker,
    close_idle,
    connect,
    forget_loop,
    namespace_prefix,
    safe_url,
)
from ._embed import Vectors

__all__ = ["Record", "SharedLog"]

T = TypeVar("T")

_EXPIRES = struct.Struct(">d")
# Records read per round trip, and round trips per catch-up: a lookup never
# waits on more than this many at once (the rest are read by the next one).
_PAGE = 500
_PAGES = 4


@dataclass(slots=True, frozen=True)
class Record:
    """One shared entry: what the tier needs to index it and find its answer."""

    scope: bytes
    key: bytes
    text: str
    vector: Vectors
    expires_at: float


class SharedLog:
    """Publishes this process's new entries and reads everyone else's."""

    __slots__ = ("_client", "_last_id", "_stream", "_url", "breaker", "max_entries", "origin")

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        model: str,
        max_entries: int,
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self._url = safe_url(url)
        self._client = connect(url, timeout, field="cache.redis_url")
        self._stream = namespace_prefix(namespace) + b"semantic:" + model.encode()
        self._last_id = b"0-0"  # from the start: a new process begins warm
        self.max_entries = max_entries
        # Tells this process's own records apart, which it indexed already.
        self.origin = uuid.uuid4().bytes
        self.breaker = Breaker(
            "semantic",
            timeout=timeout,
            backoff=backoff,
            clock=clock or SystemClock(),
            client=self._client,
        )

    async def publish(self, record: Record) -> None:
        fields: dict[Any, Any] = {
            b"o": self.origin,
            b"s": record.scope,
            b"k": record.key,
            b"t": record.text.encode(),
            b"v": record.vector.astype("<f4").tobytes(),
            b"e": _EXPIRES.pack(record.expires_at),
        }
        await self._run(
            lambda: self._client.xadd(
                self._stream, fields, maxlen=self.max_entries, approximate=True
            )
        )

    async def read_new(
        self, dim: int | None, wall: Callable[[], float] = time.time
    ) -> list[Record]:
        """Records other processes added since the last read, still fresh, of ``dim`` if known."""
        records: list[Record] = []
        for _ in range(_PAGES):
            page = await self._page()
            records += (r for r in map(self._record, page) if r is not None)
            if len(page) < _PAGE:
                break
        now = wall()
        return [r for r in records if r.expires_at > now and (dim is None or r.vector.size == dim)]

    async def _page(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = await self._run(
            lambda: self._client.xread({self._stream: self._last_id}, count=_PAGE)
        )
        streams = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]", reply or [])
        entries = streams[0][1] if streams else []
        if entries:
            self._last_id = entries[-1][0]
        return entries

    def _record(self, entry: tuple[bytes, dict[bytes, bytes]]) -> Record | None:
        fields = entry[1]
        if fields.get(b"o") == self.origin:
            return None
        try:
            vector = np.frombuffer(fields[b"v"], dtype="<f4").astype(np.float32)
            (expires_at,) = _EXPIRES.unpack(fields[b"e"])
            return Record(fields[b"s"], fields[b"k"], fields[b"t"].decode(), vector, expires_at)
        except (KeyError, ValueError, struct.error):  # not ours, or damaged: skip it
            return None

    async def clear(self) -> None:
        await self._run(lambda: self._client.delete(self._stream))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def close_idle(self) -> None:
        await close_idle(self._client)

    def forget_loop(self) -> None:
        self.breaker.forget_loop()
        forget_loop(self._client)

    async def _run(self, command: Callable[[], Awaitable[T]]) -> T:
        if self.breaker.skip():
            raise CacheError(
                "semantic", "Redis marked down after a failure; retrying after the backoff"
            )
        return await self.breaker.call(command())

    def __repr__(self) -> str:
        return f"SharedLog({self._url!r}, stream={self._stream!r}, last_id={self._last_id!r})"
