"""Monitoring: what every pipeline stage reports."""

from __future__ import annotations

from ._metrics import Counter, Histogram, Metrics

__all__ = ["Counter", "Histogram", "Metrics"]
