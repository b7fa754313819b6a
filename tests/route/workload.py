"""Drive a :class:`~overdrive.route.Router` with simulated calls on a fake clock, no I/O."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overdrive.config import RoutingConfig
from overdrive.route import Attempt, Router
from overdrive.testing import FakeClock


@dataclass(eq=False)
class Endpoint:
    """The least a router needs of an upstream: a name and the models it serves."""

    name: str
    models: list[str] = field(default_factory=lambda: ["m"])
    weight: float = 1.0
    room: float = 1.0

    def headroom(self, model: str) -> float:
        return self.room


def router(
    endpoints: list[Endpoint],
    clock: FakeClock,
    seed: int = 0,
    **settings: Any,
) -> Router[Endpoint]:
    return Router(
        endpoints,
        RoutingConfig.model_validate(settings),
        clock=clock,
        rng=random.Random(seed),
        weight=lambda e: e.weight,
        headroom=Endpoint.headroom,
    )


def call(router: Router[Endpoint], clock: FakeClock, latency: float, status: int = 200) -> str:
    """One call, start to end, taking ``latency`` seconds; returns where it went."""
    endpoint = router.pick("m")
    attempt = router.attempt(endpoint, "m")
    attempt.sent()
    clock.advance(latency)
    attempt.answered(status)
    attempt.end()
    return endpoint.name


def closed_loop(
    router: Router[Endpoint],
    clock: FakeClock,
    latency: Callable[[str, float], float],
    *,
    seconds: float,
    concurrency: int,
) -> Counter[str]:
    """``concurrency`` callers, each sending its next call when the last one ends.

    ``latency(name, now)`` is how long a call sent to ``name`` at ``now``
    takes. Runs for ``seconds`` of fake time, then lets the calls out finish.
    Returns how many calls each endpoint got.
    """
    served: Counter[str] = Counter()
    order = itertools.count()
    running: list[tuple[float, int, Attempt]] = []
    until = clock.now() + seconds

    def send() -> None:
        endpoint = router.pick("m")
        served[endpoint.name] += 1
        attempt = router.attempt(endpoint, "m")
        attempt.sent()
        done = clock.now() + latency(endpoint.name, clock.now())
        heapq.heappush(running, (done, next(order), attempt))

    for _ in range(concurrency):
        send()
    while running:
        done, _, attempt = heapq.heappop(running)
        clock.advance(max(0.0, done - clock.now()))
        attempt.answered(200)
        attempt.end()
        if clock.now() < until:
            send()
    return served


def jittered(
    base: dict[str, float], seed: int = 1, sigma: float = 0.2
) -> Callable[[str, float], float]:
    """Latencies around ``base[name]`` with a lognormal multiplier of mean 1."""
    rng = random.Random(seed)
    return lambda name, now: base[name] * rng.lognormvariate(-sigma * sigma / 2, sigma)
