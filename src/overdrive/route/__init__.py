"""Routing: choosing the deployment that serves a call."""

from __future__ import annotations

from ._router import Router

__all__ = ["Router"]
