"""The semantic cache tier: questions asked in other words, answered only when the guard agrees.

Off by default (``[cache.semantic] enabled = true`` turns it on); the engine
asks it after the exact tiers miss. Its parts: the embedders (``_embed.py``),
the vector index grouped by scope (``_index.py``), the facts a text asserts and
the guard that compares them (``_facts.py``, ``_guard.py``), the tier itself
(``_tier.py``) and the Redis stream that shares entries between processes
(``_shared.py``). It needs numpy (and usearch for big scopes): the
``semantic`` extra.
"""

from __future__ import annotations

from ._build import build_semantic
from ._embed import (
    BatchedEncoder,
    Embedder,
    EngineEmbedder,
    Vectors,
    local_encoder,
    unit_rows,
)
from ._facts import Facts, facts_of
from ._guard import CHECKS, DEFAULT_THRESHOLD, Guard
from ._index import ScopedIndex
from ._shared import Record, SharedLog
from ._tier import Candidate, Probe, SemanticTier

__all__ = [
    "CHECKS",
    "DEFAULT_THRESHOLD",
    "BatchedEncoder",
    "Candidate",
    "Embedder",
    "EngineEmbedder",
    "Facts",
    "Guard",
    "Probe",
    "Record",
    "ScopedIndex",
    "SemanticTier",
    "SharedLog",
    "Vectors",
    "build_semantic",
    "facts_of",
    "local_encoder",
    "unit_rows",
]
