"""Self-tuning: run-time tunables, the analyser that names the bottleneck, the optimizer loop."""

from __future__ import annotations

from ._analyser import LAST_RUN, Analysis, analyse, load_sample, render, save_run
from ._engine_knobs import CacheSwitch, CacheTTL, engine_tunables
from ._loop import Optimizer

__all__ = [
    "LAST_RUN",
    "Analysis",
    "CacheSwitch",
    "CacheTTL",
    "Optimizer",
    "analyse",
    "engine_tunables",
    "load_sample",
    "render",
    "save_run",
]
