"""Budgets: the USD a gateway key, or the whole engine, may spend per UTC day or month.

A call is judged before it is sent (:meth:`Budgets.admit`): if its key's or
the engine's spend for the period has reached the budget, it is refused with
:class:`~overdrive.BudgetExceededError` (the gateway answers 429
``budget_exceeded``), or moved to the budget's ``fallback`` model. Once its
answer is in, what it cost is added (:meth:`Budgets.spend`). Answers from the
cache never reach either step: they cost nothing.

Spend is known only when an answer is, so a budget stops *new* calls at its
figure; calls already in flight still finish, and spend may pass the budget
by what they cost.

With a ``redis_url`` every replica adds to, and reads, one total per scope
and period (:class:`~overdrive.cost._tally.RedisTally`); without, each
process keeps its own.

>>> from overdrive.config import BudgetConfig
>>> budget = Budget("engine", "the engine", BudgetConfig(usd=5.0, period="month"))
>>> budget.period_of(0.0)
('1970-01', 2678400.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._errors import BudgetExceededError
from ..monitor.names import BUDGET_DECISIONS
from ..route import retarget
from ._tally import LocalTally, Tally

if TYPE_CHECKING:
    from .._calls import Call
    from ..config import BudgetConfig, Config
    from ..monitor import Metrics

__all__ = ["Budget", "Budgets", "budgets_for"]


class Budget:
    """One scope's budget: ``scope`` names it in the tally, ``label`` to a person."""

    __slots__ = ("config", "label", "scope")

    def __init__(self, scope: str, label: str, config: BudgetConfig) -> None:
        self.scope = scope
        self.label = label
        self.config = config

    def period_of(self, wall: float) -> tuple[str, float]:
        """The period holding the UTC time ``wall``: its name and when it ends."""
        now = datetime.fromtimestamp(wall, UTC)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.config.period == "day":
            return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
        start = start.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
        return start.strftime("%Y-%m"), following.timestamp()

    def entry(self, wall: float) -> tuple[str, float]:
        """The tally entry of the period holding ``wall``, and when that period ends."""
        period, ends = self.period_of(wall)
        return f"{self.scope}:{period}", ends

    def __repr__(self) -> str:
        c = self.config
        return f"Budget({self.scope!r}, ${c.usd:g}/{c.period}, fallback={c.fallback!r})"


class Budgets:
    """The engine's budget and its keys', judged per call against one tally."""

    __slots__ = ("_by_key", "_engine", "_metrics", "_tally", "_wall")

    def __init__(
        self,
        engine: BudgetConfig | None,
        keys: Mapping[str, BudgetConfig],
        tally: Tally,
        wall: Callable[[], float],
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = Budget("engine", "the engine", engine) if engine is not None else None
        self._by_key = {
            name: Budget(f"key:{name}", f"key {name!r}", config) for name, config in keys.items()
        }
        self._tally = tally
        self._wall = wall
        self._metrics = metrics

    @classmethod
    def none(cls) -> Budgets:
        """No budget at all: every call passes, nothing is tallied."""
        return cls(None, {}, LocalTally(), lambda: 0.0)

    @property
    def active(self) -> bool:
        """Whether any budget is set (else the engine skips both steps)."""
        return self._engine is not None or bool(self._by_key)

    def of(self, call: Call) -> list[Budget]:
        """The budgets ``call`` counts against: its key's, then the engine's."""
        found = [self._by_key[call.key]] if call.key in self._by_key else []
        if self._engine is not None:
            found.append(self._engine)
        return found

    def of_all(self) -> list[Budget]:
        """Every budget configured: the keys', then the engine's."""
        return [*self._by_key.values(), *([self._engine] if self._engine else [])]

    async def admit(self, call: Call) -> Call:
        """``call``, or it moved to a fallback model; raises once a budget without one is spent."""
        budgets = self.of(call)
        if not budgets:
            return call
        now = self._wall()
        entries = [budget.entry(now) for budget in budgets]
        spent = await self._tally.read([name for name, _ in entries])
        for budget, (_, ends), dollars in zip(budgets, entries, spent, strict=True):
            if dollars < budget.config.usd:
                continue
            fallback = budget.config.fallback
            if fallback is None:
                self._count(budget, "refused")
                period = budget.config.period
                raise BudgetExceededError(
                    budget.label, dollars, budget.config.usd, period, ends - now
                )
            self._count(budget, "moved")
            if call.model != fallback:
                call = retarget(call, fallback)
        return call

    async def spend(self, call: Call, dollars: float) -> None:
        """Add what ``call``'s answer cost to every budget it counts against."""
        if dollars <= 0.0:
            return
        now = self._wall()
        for budget in self.of(call):
            name, ends = budget.entry(now)
            await self._tally.add(name, dollars, ends)

    def status(self) -> list[dict[str, Any]]:
        """Each budget's figures this period as this process last knew them (for ``stats()``)."""
        now = self._wall()
        return [self._status(budget, now) for budget in self.of_all()]

    def _status(self, budget: Budget, now: float) -> dict[str, Any]:
        name, ends = budget.entry(now)
        c = budget.config
        spent = self._tally.known(name)
        return {
            "scope": budget.scope,
            "period": c.period,
            "usd": c.usd,
            "spent_usd": spent,
            "fallback": c.fallback,
            "renews_in_s": ends - now,
        }

    def _count(self, budget: Budget, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.counter(BUDGET_DECISIONS, scope=budget.scope, outcome=outcome).inc()

    async def aclose(self) -> None:
        await self._tally.aclose()

    def forget_loop(self) -> None:
        self._tally.forget_loop()

    def __repr__(self) -> str:
        scopes = [b.scope for b in self.of_all()]
        return f"Budgets({scopes}, tally={self._tally!r})"


def budgets_for(
    config: Config, wall: Callable[[], float], metrics: Metrics, tally: Tally | None = None
) -> Budgets:
    """The budgets ``config`` sets, on a tally in Redis when it names one."""
    keys = {key.name: key.budget for key in config.gateway.keys if key.budget is not None}
    if config.budget is None and not keys:
        return Budgets.none()
    if tally is None:
        tally = _tally_for(config)
    return Budgets(config.budget, keys, tally, wall, metrics)


def _tally_for(config: Config) -> Tally:
    if config.redis_url is None:
        return LocalTally()
    from ._tally import RedisTally  # redis-py only when a budget is shared

    return RedisTally(config.redis_url, namespace=config.namespace)
