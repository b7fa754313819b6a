"""Self-tuning: run-time tunables and the analyser that names the bottleneck."""

from __future__ import annotations

from ._analyser import Analysis, Sample, analyse
from ._engine_knobs import CacheTTL, engine_tunables
from ._findings import Finding
from ._tunables import Change, Tunable, Tunables

__all__ = [
    "Analysis",
    "CacheTTL",
    "Change",
    "Finding",
    "Sample",
    "Tunable",
    "Tunables",
    "analyse",
    "engine_tunables",
]
