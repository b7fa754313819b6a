"""Routing: choosing the deployment that serves a call, and keeping track of its health."""

from __future__ import annotations

from ._balancer import BALANCERS, Balancer, LeastLoad, PeakEwma, RoundRobin, balancer_for
from ._deployment import Deployment, Member
from ._health import Health, HealthState
from ._latency import LatencyEstimate
from ._router import Attempt, Router

__all__ = [
    "BALANCERS",
    "Attempt",
    "Balancer",
    "Deployment",
    "Health",
    "HealthState",
    "LatencyEstimate",
    "LeastLoad",
    "Member",
    "PeakEwma",
    "RoundRobin",
    "Router",
    "balancer_for",
]
