"""One tool's run: admit (GCRA pacing, a concurrency slot), run with a timeout, retry, record.

Each attempt is admitted anew, as an upstream call's retry is: its wait is
``overdrive_tool_queue_seconds``, its run ``overdrive_tool_duration_seconds``.
With a cache TTL, calls go through the engine's cache stage: answered from
the cache, or joined to an identical call in flight; without one nothing is
shared, as a tool may have side effects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from .._clock import Clock
from .._errors import AdmissionError
from ..cache import CacheStage
from ..flow import (
    AdaptiveLimit,
    AdmissionQueue,
    Backoff,
    ConcurrencyLimit,
    FixedLimit,
    LimitSpec,
    LocalLimiter,
    RetryBudget,
    settled_within,
)
from ..monitor import Metrics
from ..monitor.names import TOOL_CALLS, TOOL_DURATION, TOOL_ERRORS, TOOL_QUEUE_WAIT, TOOL_RETRIES
from ._options import ToolOptions

__all__ = ["Attempt", "ToolRunner"]

Attempt = Callable[[], Coroutine[Any, Any, Any]]
_AUTO_INITIAL = 16


class ToolRunner:
    """Runs one tool's calls under its options, reporting by its name."""

    __slots__ = (
        "_backoff",
        "_budget",
        "_retryable",
        "_stage",
        "clock",
        "limit",
        "metrics",
        "name",
        "options",
        "queue",
    )

    def __init__(
        self,
        name: str,
        options: ToolOptions,
        *,
        clock: Clock,
        metrics: Metrics,
        stage: CacheStage[Any] | None,
        budget: RetryBudget,
        rng: random.Random,
    ) -> None:
        self.name, self.options = name, options
        self.clock, self.metrics, self._stage, self._budget = clock, metrics, stage, budget
        self._backoff = Backoff(0.2, 8.0, rng)
        timeouts = (TimeoutError,) if options.timeout is not None else ()
        self._retryable = options.retry + timeouts
        self.queue: AdmissionQueue | None = None
        if options.rpm is not None:
            # Burst of one interval: calls go evenly spaced, never two at once.
            limiter = LocalLimiter(LimitSpec(options.rpm, None, 0.0), clock)
            self.queue = AdmissionQueue(limiter, clock, name=f"tool {name}")
        self.limit = _limit(options, clock)

    async def call(self, attempt: Attempt, key: Hashable | None) -> Any:
        """``attempt()`` under the options; through the cache under ``key`` when it is cached."""
        stage = self._stage
        try:
            if key is None or stage is None:
                value, outcome = await self.run(attempt), "ok"
            else:
                value, outcome = await self._cached(stage, attempt, key)
        except BaseException:
            self.metrics.counter(TOOL_CALLS, tool=self.name, outcome="error").inc()
            raise
        self.metrics.counter(TOOL_CALLS, tool=self.name, outcome=outcome).inc()
        return value

    async def _cached(
        self, stage: CacheStage[Any], attempt: Attempt, key: Hashable
    ) -> tuple[Any, str]:
        found = await stage.lookup(key)
        if found is not None and found.fresh:
            return found.value, "cached"
        value, joined = await stage.compute_once(key, lambda: self._fill(stage, attempt, key))
        return value, "coalesced" if joined else "ok"

    async def _fill(self, stage: CacheStage[Any], attempt: Attempt, key: Hashable) -> Any:
        value = await self.run(attempt)
        assert self.options.cache is not None  # a key is made only for a cached tool
        await stage.store(key, value, self.options.cache)
        return value

    async def run(self, attempt: Attempt) -> Any:
        """Attempt until one succeeds, an error is not retryable, or attempts or budget run out."""
        self._budget.record_attempt()
        tries = self.options.attempts
        for number in range(tries):
            try:
                return await self._once(attempt)
            except self._retryable as exc:
                # A queue deadline is a TimeoutError too, but the caller's: never retried.
                spent = number + 1 >= tries or isinstance(exc, AdmissionError)
                if spent or not self._budget.try_spend():
                    raise
            self.metrics.counter(TOOL_RETRIES, tool=self.name).inc()
            await self.clock.sleep(self._backoff.delay(number))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self, attempt: Attempt) -> Any:
        clock, options = self.clock, self.options
        started = clock.now()
        if self.queue is not None:
            await self.queue.admit(priority=options.priority, max_wait=options.queue_timeout)
        permit = None if self.limit is None else await self.limit.acquire()
        running = clock.now()
        self.metrics.histogram(TOOL_QUEUE_WAIT, tool=self.name).observe(running - started)
        try:
            value = await self._timed(attempt)
        except BaseException as exc:
            self.metrics.counter(TOOL_ERRORS, tool=self.name, error=type(exc).__name__).inc()
            if permit is not None:
                permit.release("dropped" if isinstance(exc, TimeoutError) else "ignored")
            raise
        finally:
            self.metrics.histogram(TOOL_DURATION, tool=self.name).observe(clock.now() - running)
        if permit is not None:
            permit.release()
        return value

    async def _timed(self, attempt: Attempt) -> Any:
        timeout = self.options.timeout
        if timeout is None:
            return await attempt()
        task = asyncio.ensure_future(attempt())
        try:
            done = await settled_within(task, timeout, self.clock)
        finally:
            if not task.done():
                task.cancel()  # timed out, or our caller was cancelled
        if not done:
            raise TimeoutError(f"tool {self.name!r}: an attempt ran past its timeout {timeout:g}s")
        return task.result()

    def __repr__(self) -> str:
        return f"ToolRunner({self.name!r}, queue={self.queue!r}, limit={self.limit!r})"


def _limit(options: ToolOptions, clock: Clock) -> ConcurrencyLimit | None:
    if options.concurrency is None:
        return None
    if options.concurrency == "auto":
        return AdaptiveLimit(_AUTO_INITIAL, clock=clock)
    return FixedLimit(options.concurrency, clock=clock)
