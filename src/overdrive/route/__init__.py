"""Routing: choosing the deployment that serves a call, and keeping track of its health."""

from __future__ import annotations

from ._router import Attempt, Router

__all__ = ["Attempt", "Router"]
