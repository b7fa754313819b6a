"""The tools of one engine: a runner per tool name, and what the runners borrow.

One name is one set of limits: every function (or MCP tool) decorated under
a name shares its runner, so its rate limit, concurrency slots and queue
(where ``priority`` orders the waiting calls) are the name's, not the
function's. A second decoration under a name with other limits is refused.

A :class:`Toolbox` lives on an engine (``od.tool``), sharing its clock,
metrics, cache stage, ``[retry]`` settings, Redis and home event loop; a bare
``Toolbox()`` (what ``@tool`` without an engine uses) makes its own.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from .._clock import Clock, SystemClock
from .._errors import ConfigError, RequestError
from .._home import HomeLoop
from ..cache import CacheStage, MemoryCache, TieredCache
from ..config import RetryConfig, ToolConfig
from ..flow import Backoff, Limiter, LimitSpec, RetryBudget, limiter_for
from ..monitor import Metrics
from ._options import ToolOptions
from ._runner import ToolRunner

__all__ = ["Toolbox"]

_OWN_CACHE_BYTES = 64 * 1024 * 1024


class Toolbox:
    """Runners by tool name, built on first use from what the engine lends."""

    __slots__ = (
        "_made",
        "_own_cache",
        "_rng",
        "_stage",
        "clock",
        "entries",
        "home",
        "metrics",
        "namespace",
        "redis_url",
        "retry",
        "runners",
    )

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        stage: CacheStage[Any] | None = None,
        own_cache: bool = True,
        namespace: str = "",
        entries: Sequence[ToolConfig] = (),
        rng: random.Random | None = None,
        retry: RetryConfig | None = None,
        redis_url: str | None = None,
        home: HomeLoop | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics(clock=self.clock)
        self.namespace, self.entries, self.redis_url = namespace, tuple(entries), redis_url
        self.retry = retry or RetryConfig()
        self.runners: dict[str, ToolRunner] = {}
        # Without an engine's cache (own_cache), a cached tool gets a memory cache.
        self._stage, self._own_cache = stage, own_cache
        self._rng = rng or random.Random()
        self._made: list[Callable[[ToolRunner], None]] = []
        if home is None:  # an engine's home forgets the tools with the rest of its state
            home = HomeLoop()
            home.on_rebind(self._forget_loop_async)
        self.home = home

    def entry(self, name: str) -> ToolConfig | None:
        """The ``[[tools]]`` entry of ``name``, if the config has one."""
        return next((e for e in self.entries if e.name == name), None)

    def on_runner(self, hook: Callable[[ToolRunner], None]) -> None:
        """Call ``hook`` with each runner made from now on (the engine registers its tunables)."""
        self._made.append(hook)

    def runner(
        self, name: str, options: ToolOptions, parent: ToolRunner | None = None
    ) -> ToolRunner:
        """The runner of ``name``: made now, or the one already made with the same limits."""
        found = self.runners.get(name)
        if found is not None:
            if _limits(found.options) != _limits(options) or found.parent is not parent:
                raise ConfigError(
                    "name",
                    f"tool {name!r} is already defined with other limits "
                    f"({_limits(found.options)}); one name shares one set of limits",
                )
            return found
        runner = self._make(name, options, parent)
        self.runners[name] = runner
        for hook in self._made:
            hook(runner)
        return runner

    def _make(self, name: str, options: ToolOptions, parent: ToolRunner | None) -> ToolRunner:
        retry = self.retry
        return ToolRunner(
            name,
            options,
            clock=self.clock,
            metrics=self.metrics,
            stage=self._stage_for(options),
            budget=RetryBudget(retry.budget_ratio, retry.budget_min_per_second, clock=self.clock),
            backoff=Backoff(retry.base, retry.cap, self._rng),
            limiter=self._limiter(name, options),
            parent=parent,
        )

    def _stage_for(self, options: ToolOptions) -> CacheStage[Any] | None:
        if options.cache is None or self._stage is not None:
            return self._stage
        if not self._own_cache:
            raise RequestError("cache", "the engine's cache is disabled ([cache] enabled = false)")
        self._stage = CacheStage(TieredCache(MemoryCache(_OWN_CACHE_BYTES, clock=self.clock)))
        return self._stage

    def _limiter(self, name: str, options: ToolOptions) -> Limiter | None:
        if options.rpm is None:
            return None
        # Burst of one interval: calls go evenly spaced, never two at once.
        spec = LimitSpec(options.rpm, None, 0.0)
        redis_url = self.redis_url if options.shared else None
        return limiter_for(
            spec, self.clock, name=f"tool:{name}", redis_url=redis_url, namespace=self.namespace
        )

    def stats(self) -> dict[str, dict[str, int]]:
        """Each runner's :meth:`~overdrive.tools.ToolRunner.stats`, by tool name."""
        return {name: runner.stats() for name, runner in self.runners.items()}

    def forget_loop(self) -> None:
        """The event loop the runners' waiters and connections were on is gone: drop them."""
        for runner in self.runners.values():
            runner.forget_loop()

    async def _forget_loop_async(self) -> None:
        self.forget_loop()

    async def close_idle(self) -> None:
        for runner in self.runners.values():
            await runner.close_idle()

    async def aclose(self) -> None:
        for runner in self.runners.values():
            await runner.aclose()

    def __repr__(self) -> str:
        return f"Toolbox({sorted(self.runners)})"


def _limits(options: ToolOptions) -> ToolOptions:
    """The options one name shares; ``priority`` is each caller's own."""
    return dataclasses.replace(options, priority=0)
