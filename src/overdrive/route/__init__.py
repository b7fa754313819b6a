"""Routing: choosing the deployment that serves a call, and keeping track of its health."""

from __future__ import annotations

from ._aliases import Alias, aliases_of, retarget
from ._router import DEFAULT_API, Attempt, Pool, Router

__all__ = ["DEFAULT_API", "Alias", "Attempt", "Pool", "Router", "aliases_of", "retarget"]
