"""Passive health of one deployment: outlier ejection, growing ejection time, half-open return.

States, as Envoy's outlier detection and a circuit breaker's half-open state::

    healthy ──(eject_after failures in a row)──► ejected ──(time served)──► trial
       ▲                                            ▲                         │
       └──────────────(one success)─────────────────┼─────────────────────────┤
                                                    └──────(one failure)──────┘

An ejection lasts ``ejection × 2^(ejections - 1)``, at most ``max_ejection``;
the count starts over once the deployment has stayed healthy for
``max_ejection``. A deployment on *trial* gets one call at a time until one
succeeds. Whether an ejection may happen at all (the cap on the ejected share
of a model's deployments) is the router's call: it sees every deployment.
"""

from __future__ import annotations

from typing import Literal

from ..config import HealthConfig

__all__ = ["Health", "HealthState"]

HealthState = Literal["healthy", "ejected", "trial"]


class Health:
    """The outlier-ejection state of one deployment.

    >>> from overdrive.config import HealthConfig
    >>> health = Health(HealthConfig(eject_after=2, ejection=10))
    >>> health.failure(now=0.0), health.failure(now=1.0)  # the second one asks to eject
    (False, True)
    >>> health.eject(now=1.0)  # for how long
    10.0
    >>> health.state(5.0), health.state(11.0)
    ('ejected', 'trial')
    """

    __slots__ = ("_config", "_healthy_since", "consecutive_failures", "ejected_until", "ejections")

    def __init__(self, config: HealthConfig) -> None:
        self._config = config
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until: float | None = None  # set while ejected or on trial
        self._healthy_since = 0.0

    def state(self, now: float) -> HealthState:
        until = self.ejected_until
        if until is None:
            return "healthy"
        return "ejected" if now < until else "trial"

    def failure(self, now: float) -> bool:
        """Count a failure; True if the deployment should now be ejected."""
        self.consecutive_failures += 1
        state = self.state(now)
        if state == "trial":
            return True  # the trial call failed: straight back out
        return state == "healthy" and self.consecutive_failures >= self._config.eject_after

    def success(self, now: float) -> bool:
        """Count a success; True if it ended a trial (the deployment is healthy again)."""
        self.consecutive_failures = 0
        state = self.state(now)
        if state == "ejected":
            return False  # a call sent before the ejection: does not shorten it
        if state == "trial":
            self.ejected_until = None
            self._healthy_since = now
            return True
        if self.ejections and now - self._healthy_since >= self._config.max_ejection:
            self.ejections = 0  # healthy long enough: the next ejection is short again
        return False

    def eject(self, now: float) -> float:
        """Eject from ``now``; return for how long."""
        self.ejections += 1
        config = self._config
        seconds = min(config.ejection * 2.0 ** min(self.ejections - 1, 60), config.max_ejection)
        self.ejected_until = now + seconds
        return seconds

    def reprieve(self, now: float) -> None:
        """End an ejection early (a probe answered): the deployment goes on trial."""
        if self.state(now) == "ejected":
            self.ejected_until = now

    def snapshot(self, now: float) -> dict[str, object]:
        until = self.ejected_until
        return {
            "state": self.state(now),
            "consecutive_failures": self.consecutive_failures,
            "ejections": self.ejections,
            "ejected_for_s": 0.0 if until is None else round(max(0.0, until - now), 3),
        }

    def __repr__(self) -> str:
        until = "" if self.ejected_until is None else f", ejected_until={self.ejected_until:.3f}"
        return (
            f"Health(consecutive_failures={self.consecutive_failures}, "
            f"ejections={self.ejections}{until})"
        )
