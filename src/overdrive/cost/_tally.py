"""Where budgets keep their spend: in this process, or in Redis for every replica.

An entry is named by its scope and period (``key:team-a:2026-12-06``), so a
new period starts at zero and old entries fall away: locally the oldest go
first once :data:`MAX_ENTRIES` are held, in Redis each expires a day after
its period ends.

A Redis that fails is not a reason to stop serving: :class:`RedisTally` goes
on with the last total it read plus what this process spent since, and adds
that unsent spend with its next successful write, so no dollar is lost.

>>> import asyncio
>>> tally = LocalTally()
>>> asyncio.run(tally.add("engine:2026-12", 0.25, ends=0.0))
>>> asyncio.run(tally.read(["engine:2026-12", "key:a:2026-12"]))
[0.25, 0.0]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .._clock import Clock, SystemClock

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = ["MAX_ENTRIES", "LocalTally", "RedisTally", "Tally"]

# Entries held in memory: scopes times the periods still counted.
MAX_ENTRIES = 8192
# A Redis entry outlives its period by a day, for whoever inspects it.
_KEEP_AFTER = 86_400
_log = logging.getLogger("overdrive.cost")

# One round trip: add, and (re)set when the entry expires.
_ADD = """
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return total
"""


class Tally(Protocol):
    """Dollars spent per entry."""

    async def read(self, names: Sequence[str]) -> list[float]:
        """The spend of each entry now (0.0 for one nothing was added to)."""
        ...

    async def add(self, name: str, dollars: float, ends: float) -> None:
        """Add ``dollars`` to ``name``, whose period ends at the wall time ``ends``."""
        ...

    def known(self, name: str) -> float:
        """The spend of ``name`` as last read or added here, without asking anyone."""
        ...

    def forget_loop(self) -> None: ...

    async def aclose(self) -> None: ...


def _bound(entries: dict[str, float]) -> None:
    # Insertion order: the oldest periods go first.
    while len(entries) > MAX_ENTRIES:
        del entries[next(iter(entries))]


class LocalTally:
    """Spend this process alone has seen."""

    __slots__ = ("_spent",)

    def __init__(self) -> None:
        self._spent: dict[str, float] = {}

    async def read(self, names: Sequence[str]) -> list[float]:
        return [self._spent.get(name, 0.0) for name in names]

    async def add(self, name: str, dollars: float, ends: float) -> None:
        self._spent[name] = self._spent.get(name, 0.0) + dollars
        _bound(self._spent)

    def known(self, name: str) -> float:
        return self._spent.get(name, 0.0)

    def forget_loop(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalTally(entries={len(self._spent)})"


class RedisTally:
    """One total per entry in Redis, shared by every process on ``url`` and ``namespace``.

    All entries of a namespace share one cluster hash tag, so one MGET reads
    a call's key and engine entries together on a Redis Cluster too.
    """

    __slots__ = ("_add", "_breaker", "_client", "_prefix", "_remote", "_unsent", "_url")

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        timeout: float = 0.25,
        backoff: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        from .. import _redis  # redis-py only once a budget is shared

        self._client = _redis.connect(url, timeout, field="redis_url")
        self._url = _redis.safe_url(url)
        prefix = _redis.namespace_prefix(namespace).decode()
        self._prefix = f"{prefix}budget:{{{namespace}.budget}}:"
        self._breaker = _redis.Breaker(
            "budgets",
            timeout=timeout,
            backoff=backoff,
            clock=clock or SystemClock(),
            on_outage=self._on_outage,
            on_recovery=self._on_recovery,
            client=self._client,
        )
        self._add: AsyncScript = self._client.register_script(_ADD)
        self._remote: dict[str, float] = {}  # the totals Redis last gave
        self._unsent: dict[str, float] = {}  # spent here while Redis failed

    async def read(self, names: Sequence[str]) -> list[float]:
        if not self._breaker.skip():
            keys = [self._prefix + name for name in names]
            try:
                values = await self._breaker.run(self._client.mget(keys))
            except self._breaker.failures:
                pass
            else:
                for name, value in zip(names, values, strict=True):
                    self._remote[name] = float(value) if value is not None else 0.0
                _bound(self._remote)
        return [self.known(name) for name in names]

    async def add(self, name: str, dollars: float, ends: float) -> None:
        total = dollars + self._unsent.pop(name, 0.0)
        if not self._breaker.skip():
            args: list[str | int] = [repr(total), int(ends) + _KEEP_AFTER]
            try:
                reply = await self._breaker.run(self._add(keys=[self._prefix + name], args=args))
            except self._breaker.failures:
                pass
            else:
                self._remote[name] = float(reply)
                _bound(self._remote)
                return
        self._unsent[name] = total
        _bound(self._unsent)

    def known(self, name: str) -> float:
        return self._remote.get(name, 0.0) + self._unsent.get(name, 0.0)

    def forget_loop(self) -> None:
        from .._redis import forget_loop  # redis-py is loaded by now

        self._breaker.forget_loop()
        forget_loop(self._client)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _on_outage(self, exc: BaseException) -> None:
        _log.warning(
            "budgets: Redis at %s failed (%s: %s); judging by the last total read plus "
            "this process's spend until it is back",
            self._url,
            type(exc).__name__,
            exc,
        )

    def _on_recovery(self) -> None:
        _log.info("budgets: Redis at %s is back; spend shared again", self._url)

    def __repr__(self) -> str:
        return (
            f"RedisTally(url={self._url!r}, state={self._breaker.state!r}, "
            f"entries={len(self._remote)}, unsent={len(self._unsent)})"
        )
