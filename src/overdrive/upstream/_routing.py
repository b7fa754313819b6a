"""Build the engine's router over its upstreams, as ``[routing]`` describes it.

Here rather than in ``route``: routing knows deployments only through the
callbacks given to it (weight, headroom, probe); the upstreams supply them.
"""

from __future__ import annotations

import random

from .._clock import Clock
from ..config import Config
from ..route import Router
from ._upstream import Upstream

__all__ = ["build_router"]


def build_router(
    upstreams: list[Upstream],
    config: Config,
    clock: Clock,
    rng: random.Random,
    *,
    probes_by_default: bool,
) -> Router[Upstream]:
    """The router over ``upstreams``; ``probes_by_default`` when ``[routing.health]`` is silent.

    The engine turns probes on by default only on the real clock: a probe
    waits on real sockets, which a test stepping a fake clock cannot drive.
    """
    health = config.routing.health
    probing = health.probes if health.probes is not None else probes_by_default
    return Router(
        upstreams,
        config.routing,
        clock=clock,
        rng=random.Random(rng.random()),  # its own stream, seeded from the engine's
        weight=lambda u: u.weight,
        headroom=Upstream.headroom,
        api=lambda u: u.config.api,
        probe=(lambda u: u.probe(health.probe_path, health.probe_timeout)) if probing else None,
    )
