"""Balancers: which of a model's deployments takes the next call.

Each balancer gets the candidates (healthy deployments of the model, minus
one that just failed) and picks one; the router keeps one balancer per model.

* :class:`RoundRobin` – in turn, blind to load and latency.
* :class:`LeastLoad` – fewest calls pending per unit of weight; ties go round
  in turn, so an idle pool does not pile onto its first deployment.
* :class:`PeakEwma` (the default) – power of two choices: draw two distinct
  candidates at random, in proportion to weight × rate-limit headroom, and
  take the one with the lower ``latency × (pending + 1) / weight``, latency
  being the peak-EWMA estimate (raised to the age of the oldest call still
  out). Two random choices rather than the global best, so many callers
  deciding at once do not all pile onto the same deployment.

>>> import random
>>> balancer_for("round_robin", random.Random(0))
RoundRobin(turn=0)
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from .._errors import ConfigError
from ._deployment import Member

__all__ = ["BALANCERS", "Balancer", "LeastLoad", "PeakEwma", "RoundRobin", "balancer_for"]

M = TypeVar("M", bound=Member[Any])

# The latency assumed when no candidate has answered yet: any positive value
# works, since then every candidate has it and only the pending calls count.
_UNOBSERVED = 0.1


class Balancer(ABC):
    """Picks one of a non-empty sequence of candidates."""

    name: ClassVar[str]
    __slots__ = ()

    @abstractmethod
    def choose(self, candidates: Sequence[M], now: float) -> M:
        """The candidate that takes the next call."""


class RoundRobin(Balancer):
    """Each candidate in turn."""

    name = "round_robin"
    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[M], now: float) -> M:
        turn = self._turn
        self._turn = turn + 1
        return candidates[turn % len(candidates)]

    def __repr__(self) -> str:
        return f"RoundRobin(turn={self._turn})"


class LeastLoad(Balancer):
    """The candidate with the fewest pending calls per unit of weight, counting this one."""

    name = "least_load"
    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[M], now: float) -> M:
        count = len(candidates)
        start = self._turn % count
        self._turn += 1
        best = candidates[start]
        lowest = (best.deployment.pending + 1) / best.deployment.weight
        for step in range(1, count):
            member = candidates[(start + step) % count]
            load = (member.deployment.pending + 1) / member.deployment.weight
            if load < lowest:
                best, lowest = member, load
        return best

    def __repr__(self) -> str:
        return f"LeastLoad(turn={self._turn})"


class PeakEwma(Balancer):
    """Power of two choices over peak-EWMA latency × (pending + 1) / weight."""

    name = "peak_ewma"
    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[M], now: float) -> M:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._two(candidates)
        if second is None:
            return first
        neutral = _UNOBSERVED
        if not (first.latency.observed and second.latency.observed):
            neutral = _neutral(candidates, now)
        if cost(second, now, neutral) < cost(first, now, neutral):
            return second
        return first

    def _two(self, candidates: Sequence[M]) -> tuple[M, M | None]:
        """Two distinct candidates, drawn in proportion to weight × headroom.

        The second is None when no other candidate has any headroom left:
        the only one that can take a call now needs no comparing.
        """
        shares = [m.deployment.weight * m.headroom() for m in candidates]
        total = sum(shares)
        if total <= 0.0:  # no headroom anywhere: by weight alone
            shares = [m.deployment.weight for m in candidates]
            total = sum(shares)
        first = _draw(shares, total, self._rng.random(), skip=-1)
        rest = total - shares[first]
        if rest <= 0.0:
            return candidates[first], None
        return candidates[first], candidates[_draw(shares, rest, self._rng.random(), skip=first)]

    def __repr__(self) -> str:
        return "PeakEwma()"


def cost(member: Member[Any], now: float, neutral: float = _UNOBSERVED) -> float:
    """What sending one more call to ``member`` is expected to cost: lower is better."""
    deployment = member.deployment
    latency = member.expected_latency(now, neutral)
    return latency * (deployment.pending + 1) / deployment.weight


def _draw(shares: list[float], total: float, point: float, skip: int) -> int:
    """The index whose share covers ``point × total`` of the running sum, ``skip`` left out."""
    target = point * total
    last = -1
    for index, share in enumerate(shares):
        if index == skip or share <= 0.0:
            continue
        last = index
        target -= share
        if target < 0.0:
            return index
    return last  # rounding left a sliver past the end


def _neutral(candidates: Sequence[Member[Any]], now: float) -> float:
    """What to assume for a candidate never observed: the mean of those that were."""
    total, count = 0.0, 0
    for member in candidates:
        value = member.latency.current(now)
        if value is not None:
            total += value
            count += 1
    return total / count if count else _UNOBSERVED


BALANCERS: dict[str, type[Balancer]] = {b.name: b for b in (PeakEwma, LeastLoad, RoundRobin)}


def balancer_for(name: str, rng: random.Random | None = None) -> Balancer:
    """A new balancer by config name (``[routing] balancer``)."""
    if name == PeakEwma.name:
        return PeakEwma(rng)
    kind = BALANCERS.get(name)
    if kind is None:
        raise ConfigError(
            "routing.balancer", f"unknown balancer {name!r}; known: {sorted(BALANCERS)}"
        )
    return kind()
