"""What the router knows about each deployment: load, latency, headroom and health."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from ..config import HealthConfig
from ._health import Health
from ._latency import LatencyEstimate

__all__ = ["DEFAULT_API", "Deployment", "Member", "Named"]

# The API of a deployment nobody said otherwise of, and of a call that names none.
DEFAULT_API = "openai"


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Sequence[str]: ...


U = TypeVar("U", bound=Named)


class Deployment(Generic[U]):
    """One upstream as the router sees it: its API, weight, calls pending and health.

    ``pending`` counts the calls routed here and not finished, including those
    still waiting for its rate limit or a concurrency slot: that wait is load
    too, so a deployment whose queue grows is offered less.
    """

    __slots__ = ("api", "health", "members", "name", "pending", "trials", "upstream", "weight")

    def __init__(
        self, upstream: U, weight: float, health: HealthConfig, api: str = DEFAULT_API
    ) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.api = api
        self.weight = weight
        self.pending = 0
        self.trials = 0  # calls out while on trial: one at a time
        self.health = Health(health)
        self.members: dict[str, Member[U]] = {}  # by model

    def __repr__(self) -> str:
        return (
            f"Deployment({self.name!r}, weight={self.weight:g}, pending={self.pending}, "
            f"{self.health!r})"
        )


class Member(Generic[U]):
    """A deployment in one model's pool: that model's latency there, and its headroom.

    ``sending`` holds the start time of each call out on the wire, oldest
    first (dicts keep insertion order), so the age of the oldest one is read
    in O(1): a call that has run longer than the estimate counts as a sample,
    and a deployment that hangs is noticed before its calls finish.
    """

    __slots__ = ("_headroom", "answers", "deployment", "latency", "model", "races", "sending")

    def __init__(
        self,
        deployment: Deployment[U],
        model: str,
        decay: float,
        headroom: Callable[[], float] | None,
    ) -> None:
        self.deployment = deployment
        self.model = model
        self.latency = LatencyEstimate(decay)
        self.sending: dict[object, float] = {}
        self._headroom = headroom
        self.answers = 0  # answered (below 400): none yet means nothing is known of it
        self.races = 0  # calls also sent elsewhere while it was unknown

    @property
    def upstream(self) -> U:
        return self.deployment.upstream

    def headroom(self) -> float:
        """The share of its rate-limit burst still free, 0..1 (1 when unlimited)."""
        return 1.0 if self._headroom is None else self._headroom()

    def oldest_age(self, now: float) -> float:
        for started in self.sending.values():
            return now - started
        return 0.0

    def expected_latency(self, now: float, neutral: float) -> float:
        """The peak-EWMA estimate, raised to the age of the oldest call still out."""
        estimate = self.latency.current(now)
        age = self.oldest_age(now)
        if estimate is None:
            estimate = neutral
        return age if age > estimate else estimate

    def __repr__(self) -> str:
        return (
            f"Member({self.deployment.name!r}, {self.model!r}, {self.latency!r}, "
            f"sending={len(self.sending)})"
        )
