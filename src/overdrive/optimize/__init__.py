"""Self-tuning: the registry of run-time tunables (the analyser and the loop build on it)."""

from __future__ import annotations

from ._engine_knobs import CacheTTL, engine_tunables
from ._tunables import Change, Tunable, Tunables

__all__ = ["CacheTTL", "Change", "Tunable", "Tunables", "engine_tunables"]
