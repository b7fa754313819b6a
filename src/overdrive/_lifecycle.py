"""What an engine's parts do when its event loop goes away, ends, or the engine closes.

:class:`~overdrive.engine.Overdrive` hands these to its home loop
(``_home.py``): ``forget_loop`` when the loop the state was bound to is gone,
``close_idle`` while that loop is shutting down, ``close`` when the engine is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._assembly import Parts
from ._forward import Forwarder
from ._stream_stage import StreamStage
from .monitor import Alerts
from .optimize import Optimizer
from .tools import Toolbox
from .trace import MetricsExport, Tracing

if TYPE_CHECKING:
    from .cache.semantic import SemanticTier

__all__ = ["Lifecycle"]


class Lifecycle:
    """Drops, closes idle, and closes everything an engine holds, in a safe order."""

    __slots__ = (
        "_forwarder",
        "_parts",
        "_streams",
        "_tools",
        "alerts",
        "metrics_export",
        "optimizer",
        "semantic",
        "tracer",
    )

    def __init__(
        self, parts: Parts, streams: StreamStage, forwarder: Forwarder, tools: Toolbox
    ) -> None:
        self._parts = parts
        self._streams = streams
        self._forwarder = forwarder
        self._tools = tools
        self.optimizer: Optimizer | None = None  # set once the engine starts one
        self.alerts: Alerts | None = None  # set when [alerts] has rules
        self.semantic: SemanticTier | None = None  # set when [cache.semantic] is on
        self.tracer: Tracing | None = None  # set when [tracing] is on
        self.metrics_export: MetricsExport | None = None  # set when [tracing] metrics is on

    async def forget_loop(self) -> None:
        """The loop the engine was bound to is gone: drop what waited or pooled on it."""
        parts = self._parts
        parts.cache.stage.flight.forget_loop()
        parts.cache.tiers.forget_loop()
        self._streams.forget_loop()
        parts.batches.forget_loop()
        self._tools.forget_loop()
        if self.alerts is not None:  # their task died with the old loop: judge on this one
            self.alerts.start()
        if self.metrics_export is not None:  # likewise: export from this loop
            self.metrics_export.start()
        parts.send.sender.budgets.forget_loop()
        if self.semantic is not None:
            self.semantic.forget_loop()
        for upstream in parts.send.upstreams:
            await upstream.forget_loop()
        await self._forwarder.aclose()

    async def close_idle(self) -> None:
        """The home loop is shutting down: close pooled connections there, while it runs."""
        if self.semantic is not None:  # first: remembering may still embed through an upstream
            await self.semantic.close_idle()
        for upstream in self._parts.send.upstreams:
            await upstream.close_idle()
        await self._parts.cache.tiers.close_idle()
        await self._tools.close_idle()
        await self._forwarder.aclose()
        if self.alerts is not None:  # their task is cancelled with the loop; pools close here
            await self.alerts.aclose()
        if self.metrics_export is not None:
            await self.metrics_export.close_idle()

    async def close(self) -> None:
        """Stop the tasks (optimizer, probes, batch timers), then close pools and connections."""
        parts = self._parts
        if self.optimizer is not None:
            await self.optimizer.aclose()
        if self.alerts is not None:
            await self.alerts.aclose()
        await parts.send.router.aclose()  # stops the health probes
        await parts.send.dispatcher.aclose()  # losing race copies still out
        if self.semantic is not None:  # before the upstreams: remembering may embed through them
            await self.semantic.aclose()
        await parts.batches.aclose()
        await self._tools.aclose()
        await parts.cache.tiers.aclose()
        for upstream in parts.send.upstreams:
            await upstream.aclose()
        await self._forwarder.aclose()
        await parts.send.sender.budgets.aclose()
        await parts.resources.aclose()
        if self.tracer is not None:  # last: the spans of calls that ended while closing
            await self.tracer.aclose()
        if self.metrics_export is not None:  # after every part: the final counts
            await self.metrics_export.aclose()

    def __repr__(self) -> str:
        return (
            f"Lifecycle(upstreams={len(self._parts.send.upstreams)}, optimizer={self.optimizer!r})"
        )
