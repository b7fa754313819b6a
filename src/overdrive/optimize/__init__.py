"""Self-tuning: run-time tunables, the analyser that names the bottleneck, the optimizer loop."""

from __future__ import annotations

from ._analyser import (
    LAST_RUN,
    Analysis,
    Sample,
    analyse,
    load_sample,
    render,
    sample_of,
    save_run,
)
from ._engine_knobs import CacheSwitch, CacheTTL, engine_tunables, tool_tunables
from ._loop import Optimizer
from ._tunables import Tunable, Tunables

__all__ = [
    "LAST_RUN",
    "Analysis",
    "CacheSwitch",
    "CacheTTL",
    "Optimizer",
    "Sample",
    "Tunable",
    "Tunables",
    "analyse",
    "engine_tunables",
    "load_sample",
    "render",
    "sample_of",
    "save_run",
    "tool_tunables",
]
