"""Peak-EWMA: a latency estimate that believes bad news at once and good news slowly.

The estimate follows Finagle's and Linkerd's ``PeakEwma``. A sample above the
current estimate replaces it outright (the peak), so one slow answer is
enough to steer traffic away. A sample below it is blended in as a
time-based EWMA, ``w = exp(-elapsed / decay)`` with ``elapsed`` the time since
the previous sample: the estimate relaxes with time constant ``decay``
however many calls arrive. With no samples at all the estimate decays
towards zero, so a deployment that was slow and then left alone is tried
again after a while instead of being shunned for good.

>>> estimate = LatencyEstimate(decay=10.0)
>>> estimate.observe(0.1, now=0.0)
>>> estimate.observe(2.0, now=1.0)  # a peak: believed at once
>>> estimate.current(1.0)
2.0
>>> round(estimate.current(11.0), 3)  # ten idle seconds later: e^-1 of it
0.736
"""

from __future__ import annotations

import math

__all__ = ["LatencyEstimate"]


class LatencyEstimate:
    """One (deployment, model)'s latency in seconds; ``None`` until first observed."""

    __slots__ = ("_stamp", "_value", "decay")

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self._value = 0.0
        self._stamp: float | None = None

    @property
    def observed(self) -> bool:
        return self._stamp is not None

    def current(self, now: float) -> float | None:
        """The estimate at ``now``: decayed towards zero since the last sample."""
        stamp = self._stamp
        if stamp is None:
            return None
        return self._value * math.exp(-max(0.0, now - stamp) / self.decay)

    def observe(self, sample: float, now: float) -> None:
        """A finished call's latency."""
        stamp = self._stamp
        if stamp is None or sample >= self._value:
            self._value = sample
        else:
            weight = math.exp(-max(0.0, now - stamp) / self.decay)
            self._value = self._value * weight + sample * (1.0 - weight)
        self._stamp = now

    def at_least(self, bound: float, now: float) -> None:
        """A call known to take at least ``bound`` (abandoned, timed out): a peak if above."""
        current = self.current(now)
        if current is None or bound > current:
            self._value = bound
            self._stamp = now

    def __repr__(self) -> str:
        shown = "unobserved" if self._stamp is None else f"{self._value * 1000:.1f}ms"
        return f"LatencyEstimate({shown}, decay={self.decay:g}s)"
