"""Policies: from an analysis's findings to one safe change of one tunable.

A finding names a tunable and a suggested value; a policy moves toward it by
one safe step only (at most ``factor`` times the value, or the tunable's
``step`` when that is more, within the bounds), skipping tunables on
cool-down. On/off switches (bounds 0..1) go straight to the suggestion.

The cache switch has no finding of its own in the analyser (with the cache
off, repeats show only as calls joined in flight), so :func:`cache_off`
makes one from the share of requests served by coalescing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._analyser import Analysis
from ._findings import Finding, severity
from ._tunables import Tunable, Tunables

__all__ = ["Proposal", "cache_off", "propose", "safe_step"]

CACHE_SWITCH = "cache.enabled"
# Below this share of repeated requests, turning the cache on is not worth a try.
_MIN_REPEATS = 0.05


@dataclass(frozen=True, slots=True)
class Proposal:
    """One change to try: the tunable, from where to where, and the finding behind it."""

    tunable: str
    old: float
    new: float
    finding: Finding

    @property
    def direction(self) -> int:
        return 1 if self.new > self.old else -1


def safe_step(tunable: Tunable, old: float, suggested: float, factor: float = 2.0) -> float:
    """One safe move from ``old`` toward ``suggested``, within bounds (``old`` if none).

    >>> knob = Tunable("c", lambda: 4, lambda v: None, low=1, high=64, step=2, integer=True)
    >>> safe_step(knob, 4, 100), safe_step(knob, 4, 5), safe_step(knob, 4, 1, factor=1.5)
    (8, 5, 2)
    """
    if tunable.high - tunable.low <= 1:  # a switch: no half-way
        return tunable.clamp(suggested)
    if suggested > old:
        target = min(suggested, old + max(tunable.step, old * (factor - 1)))
    else:
        target = max(suggested, old - max(tunable.step, old * (1 - 1 / factor)))
    return tunable.clamp(target)


def cache_off(analysis: Analysis, tunables: Tunables) -> Finding | None:
    """A finding to turn the cache on, when it is off and requests repeat."""
    if CACHE_SWITCH not in tunables or tunables[CACHE_SWITCH].value >= 1:
        return None
    # Windows of different counters can disagree a little; a share stays a share.
    repeats = min(1.0, analysis.served_locally.get("coalesced", 0.0))
    if repeats < _MIN_REPEATS:
        return None
    # A joined call waited as long as the one it joined; a cache would have answered at once.
    return Finding(
        "caching",
        severity(repeats),
        repeats,
        f"{repeats:.0%} of requests repeat a call in flight: caching is off",
        "enable caching",
        {"repeat_ratio": round(repeats, 4)},
        CACHE_SWITCH,
        1.0,
    )


def propose(
    analysis: Analysis,
    tunables: Tunables,
    *,
    cooling: Callable[[str, int], bool],
    factor: Callable[[str, int], float],
) -> Proposal | None:
    """The change for the most explaining finding that has one, not cooling down."""
    for finding in _candidates(analysis, tunables):
        proposal = _proposal(finding, tunables, factor)
        if proposal is not None and not cooling(proposal.tunable, proposal.direction):
            return proposal
    return None


def _candidates(analysis: Analysis, tunables: Tunables) -> Iterable[Finding]:
    found = list(analysis.findings)
    switch = cache_off(analysis, tunables)
    if switch is not None:
        found.append(switch)
    found.sort(key=lambda f: -f.explains)
    return found


def _proposal(
    finding: Finding, tunables: Tunables, factor: Callable[[str, int], float]
) -> Proposal | None:
    name, suggested = finding.tunable, finding.suggested
    if name is None or suggested is None or name not in tunables or math.isnan(suggested):
        return None
    if name == "cache.ttl" and CACHE_SWITCH in tunables and tunables[CACHE_SWITCH].value < 1:
        return None  # a TTL does nothing while the cache is off
    knob = tunables[name]
    old = knob.value
    direction = 1 if suggested > old else -1
    new = safe_step(knob, old, suggested, factor(name, direction))
    return None if new == old else Proposal(name, old, new, finding)
