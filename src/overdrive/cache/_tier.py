"""The small base every shared (L2) cache tier implements.

An L2 tier stores already-encoded bytes with absolute wall-clock times, so
several processes (and restarts) agree on freshness. ``get`` returns an
entry until its ``stale_until``; the caller decides whether a stale entry is
served (stale-while-revalidate) or treated as a miss.

Tiers raise :class:`~overdrive.CacheError` when their backend fails; the
tiered cache catches it, counts it and carries on (fail open).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Entry", "Tier"]


@dataclass(slots=True, frozen=True)
class Entry:
    """One stored value: ``value`` is codec output; times are epoch seconds."""

    value: bytes
    expires_at: float
    stale_until: float
    tags: tuple[str, ...] = ()

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    def usable(self, now: float) -> bool:
        """Fresh, or stale but still inside its serve-stale window."""
        return now < self.stale_until


class Tier(ABC):
    """A shared cache tier (SQLite file, Redis). All methods may raise ``CacheError``."""

    name: str

    @abstractmethod
    async def get(self, key: bytes) -> Entry | None:
        """The entry for ``key`` if present and still usable, else None."""

    @abstractmethod
    async def set(self, key: bytes, entry: Entry) -> None:
        """Store ``entry``, replacing any previous one and indexing its tags."""

    @abstractmethod
    async def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was there."""

    @abstractmethod
    async def delete_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying any of ``tags``; return how many went."""

    @abstractmethod
    async def clear(self) -> None:
        """Remove everything this tier holds (in its namespace)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and files."""

    async def close_idle(self) -> None:  # noqa: B027 (only tiers with loop-bound connections act)
        """Close pooled connections now: the event loop they belong to is ending."""

    def forget_loop(self) -> None:  # noqa: B027 (only tiers with loop-bound connections act)
        """The event loop this tier's connections were made on is gone: drop them."""
