"""A process-wide registry for code that has no engine at hand."""

from __future__ import annotations

from ._measure import Measure
from ._metrics import Metrics
from ._prometheus import prometheus_text

__all__ = ["default_metrics", "measure", "metrics_text"]

default_metrics = Metrics()


def measure(name: str, **labels: str) -> Measure:
    """Time a block or function into the default registry.

    >>> import overdrive.monitor as monitor
    >>> with monitor.measure("demo_step"):
    ...     pass
    >>> "demo_step_seconds_count 1" in monitor.metrics_text()
    True
    """
    return default_metrics.measure(name, **labels)


def metrics_text() -> str:
    """The default registry in Prometheus text format."""
    return prometheus_text(default_metrics)
