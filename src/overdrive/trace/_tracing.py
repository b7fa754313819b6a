"""What the engine and the gateway ask of a tracer: the seam OpenTelemetry sits behind.

The engine holds a :class:`Tracing` only while ``[tracing]`` is on (None
otherwise, so its hot path checks one attribute); the implementation, and
OpenTelemetry with it, is imported only then (``_otel.py``). Likewise a
:class:`MetricsExport` only while ``[tracing] metrics`` is (``_metrics_export.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from .._calls import Call
from ._span import CallSpan, Reply

__all__ = ["MetricsExport", "Tracing"]

T = TypeVar("T")
R = TypeVar("R", bound=Reply)


class Tracing(Protocol):
    """A tracer: spans for calls, a caller's trace continued, export flushed and closed."""

    def start(self, call: Call, started: float) -> CallSpan | None:
        """The span of a complete call starting at ``started`` (engine clock), if sampled."""
        ...

    async def stream(self, call: Call, open: Callable[[Call], Awaitable[R]]) -> R:
        """``open(call)`` under a span that ends at the stream's first byte."""
        ...

    async def serving(self, work: Awaitable[T], headers: Mapping[str, str]) -> T:
        """Await a door's ``work`` as the server side of the trace its ``traceparent`` names."""
        ...

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export every span ended so far; False if that took longer than ``timeout_s``."""
        ...

    async def aclose(self) -> None:
        """Export what is left and stop exporting."""
        ...


class MetricsExport(Protocol):
    """The metrics registry sent on a schedule: started on a loop, flushed when closed."""

    def start(self) -> None:
        """Export every interval on the running loop (again after a move to a new loop)."""
        ...

    async def export_once(self) -> bool:
        """Send every series now; True if the collector took them (never raises)."""
        ...

    async def close_idle(self) -> None:
        """The loop is shutting down: stop, and close what is pooled on it."""
        ...

    async def aclose(self) -> None:
        """Stop, send the final values once, close."""
        ...
