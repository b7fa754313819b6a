"""One tool's run: admit (GCRA pacing, a concurrency slot), run with a timeout, retry, record.

Each attempt is admitted anew, as an upstream call's retry is: its wait is
``overdrive_tool_queue_seconds``, its run ``overdrive_tool_duration_seconds``.
A runner with a ``parent`` (an MCP server's tool) is admitted by both: its
own limits, then the parent's, so a server's limits hold over all its tools.
With a cache TTL, calls go through the engine's cache stage: answered from
the cache, or joined to an identical call in flight; without one nothing is
shared, as a tool may have side effects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable, Mapping
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
    Limiter,
    Outcome,
    Permit,
    RetryBudget,
    retry_after,
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
        "_outcomes",
        "_queued",
        "_ran",
        "_retries",
        "_retryable",
        "_stage",
        "clock",
        "limit",
        "metrics",
        "name",
        "options",
        "parent",
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
        backoff: Backoff,
        limiter: Limiter | None = None,
        parent: ToolRunner | None = None,
    ) -> None:
        self.name, self.options, self.parent = name, options, parent
        self.clock, self.metrics, self._stage, self._budget = clock, metrics, stage, budget
        self._backoff = backoff
        timeouts = (TimeoutError,) if options.timeout is not None else ()
        self._retryable = options.retry + timeouts
        self.queue: AdmissionQueue | None = None
        if limiter is not None:
            self.queue = AdmissionQueue(limiter, clock, name=f"tool {name}")
        self.limit = _limit(options, clock)
        # Looked up once: a label lookup per call would cost every call of the tool.
        self._outcomes = {
            outcome: metrics.counter(TOOL_CALLS, tool=name, outcome=outcome)
            for outcome in ("ok", "error", "cached", "coalesced")
        }
        self._retries = metrics.counter(TOOL_RETRIES, tool=name)
        self._queued = metrics.histogram(TOOL_QUEUE_WAIT, tool=name)
        self._ran = metrics.histogram(TOOL_DURATION, tool=name)

    async def call(
        self, attempt: Attempt, key: Hashable | None = None, priority: int | None = None
    ) -> Any:
        """``attempt()`` under the options; through the cache under ``key`` when it is cached.

        ``priority`` (the options' when None) orders this call among those
        waiting for the rate limit: higher goes first.
        """
        stage = self._stage
        rank = self.options.priority if priority is None else priority
        try:
            if key is None or stage is None:
                value, outcome = await self.run(attempt, rank), "ok"
            else:
                value, outcome = await self._cached(stage, attempt, key, rank)
        except BaseException:
            self._outcomes["error"].inc()
            raise
        self._outcomes[outcome].inc()
        return value

    async def _cached(
        self, stage: CacheStage[Any], attempt: Attempt, key: Hashable, priority: int
    ) -> tuple[Any, str]:
        found = await stage.lookup(key)
        if found is not None and found.fresh:
            return found.value, "cached"
        fill = lambda: self._fill(stage, attempt, key, priority)  # noqa: E731
        value, joined = await stage.compute_once(key, fill)
        return value, "coalesced" if joined else "ok"

    async def _fill(
        self, stage: CacheStage[Any], attempt: Attempt, key: Hashable, priority: int
    ) -> Any:
        value = await self.run(attempt, priority)
        assert self.options.cache is not None  # a key is made only for a cached tool
        await stage.store(key, value, self.options.cache)
        return value

    async def run(self, attempt: Attempt, priority: int = 0) -> Any:
        """Attempt until one succeeds, an error is not retryable, or attempts or budget run out."""
        self._budget.record_attempt()
        tries = self.options.attempts
        for number in range(tries):
            try:
                return await self._once(attempt, priority)
            except self._retryable as exc:
                # A queue deadline is a TimeoutError too, but the caller's: never retried.
                spent = number + 1 >= tries or isinstance(exc, AdmissionError)
                if spent or not self._budget.try_spend():
                    raise
                failure: BaseException = exc
            self._retries.inc()
            await self._pause(number, failure)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _pause(self, number: int, failure: BaseException) -> None:
        """The backoff before retry ``number``, or longer if the failure said how long to wait.

        A tool that answered 429 or 503 with ``Retry-After`` (an exception with a
        ``retry_after`` in seconds, or a ``response`` with the header, as
        ``httpx.HTTPStatusError`` has) is waited out, and a paced tool's limit
        held that long, so its other calls do not walk into the same refusal.
        """
        delay = self._backoff.delay(number)
        told = _told_to_wait(failure)
        if told is not None:
            if self.queue is not None:
                await self.queue.limiter.hold(told)
            delay = max(delay, told)
        await self.clock.sleep(delay)

    async def _once(self, attempt: Attempt, priority: int) -> Any:
        clock = self.clock
        started = clock.now()
        permits = await self._admit(priority)
        running = clock.now()
        self._queued.observe(running - started)
        try:
            value = await self._timed(attempt)
        except BaseException as exc:
            self.metrics.counter(TOOL_ERRORS, tool=self.name, error=type(exc).__name__).inc()
            outcome: Outcome = "dropped" if isinstance(exc, TimeoutError) else "ignored"
            for permit in permits:
                permit.release(outcome)
            raise
        finally:
            self._ran.observe(clock.now() - running)
        for permit in permits:
            permit.release()
        return value

    async def _admit(self, priority: int) -> list[Permit]:
        """Wait for this runner's turn and slot, then its parent's; the slots taken, in order."""
        permits: list[Permit] = []
        runner: ToolRunner | None = self
        try:
            while runner is not None:
                if runner.queue is not None:
                    wait = runner.options.queue_timeout
                    await runner.queue.admit(priority=priority, max_wait=wait)
                if runner.limit is not None:
                    permits.append(await runner.limit.acquire())
                runner = runner.parent
        except BaseException:
            for permit in permits:
                permit.release("ignored")
            raise
        return permits

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

    def stats(self) -> dict[str, int]:
        """What it holds now: calls running (under a limit), calls waiting, and the limit."""
        found = {"waiting": 0 if self.queue is None else self.queue.waiting}
        if self.limit is not None:
            found["in_flight"], found["concurrency"] = self.limit.in_flight, self.limit.limit
            found["waiting"] += self.limit.waiting
        return found

    def forget_loop(self) -> None:
        """The loop its waiters were on is gone: drop them (the slots they held are freed)."""
        if self.queue is not None:
            self.queue.forget_loop()
        if self.limit is not None:
            self.limit.forget_loop()

    async def close_idle(self) -> None:
        if self.queue is not None:
            await self.queue.limiter.close_idle()

    async def aclose(self) -> None:
        if self.queue is not None:
            await self.queue.aclose()
            await self.queue.limiter.aclose()  # a Redis limiter's connections

    def __repr__(self) -> str:
        return f"ToolRunner({self.name!r}, queue={self.queue!r}, limit={self.limit!r})"


def _told_to_wait(failure: BaseException) -> float | None:
    """Seconds a failure asked to wait: its ``retry_after``, or its response's header."""
    given = getattr(failure, "retry_after", None)
    if isinstance(given, int | float) and not isinstance(given, bool):
        return retry_after({"retry-after": str(given)})
    headers = getattr(getattr(failure, "response", None), "headers", None)
    return retry_after(headers) if isinstance(headers, Mapping) else None


def _limit(options: ToolOptions, clock: Clock) -> ConcurrencyLimit | None:
    bounds = options.concurrency_bounds
    if options.concurrency is None or bounds is None:
        return None
    if options.concurrency == "auto":
        low, high = bounds
        initial = min(max(_AUTO_INITIAL, low), high)
        return AdaptiveLimit(initial, min_limit=low, max_limit=high, clock=clock)
    return FixedLimit(options.concurrency, clock=clock)
