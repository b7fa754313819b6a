"""Routing: choosing the deployment that serves a call, and keeping track of its health."""

from __future__ import annotations

from ._router import DEFAULT_API, Attempt, Router

__all__ = ["DEFAULT_API", "Attempt", "Router"]
