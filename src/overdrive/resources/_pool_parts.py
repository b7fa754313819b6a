"""The plain parts of a resource pool: its options, its stats, one resource's slot."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Generic, TypedDict, TypeVar

from .._clock import Clock

__all__ = ["PoolOptions", "PoolStats", "Slot"]

T = TypeVar("T")


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


class Slot(Generic[T]):
    """One live resource and its bookkeeping."""

    __slots__ = ("dead", "idle_since", "resource", "uses")

    def __init__(self, resource: T) -> None:
        self.resource = resource
        self.uses = 0
        self.idle_since = 0.0
        self.dead = False  # closed by aclose() while held; its holder's release only frees the slot
