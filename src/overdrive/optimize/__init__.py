"""Self-tuning: run-time tunables, the analyser that names the bottleneck, the optimizer loop."""

from __future__ import annotations

from ._analyser import Analysis, Sample, analyse
from ._engine_knobs import CacheSwitch, CacheTTL, engine_tunables
from ._findings import Finding
from ._loop import Decision, Optimizer, Outcome
from ._policies import Proposal
from ._tunables import Change, Tunable, Tunables

__all__ = [
    "Analysis",
    "CacheSwitch",
    "CacheTTL",
    "Change",
    "Decision",
    "Finding",
    "Optimizer",
    "Outcome",
    "Proposal",
    "Sample",
    "Tunable",
    "Tunables",
    "analyse",
    "engine_tunables",
]
