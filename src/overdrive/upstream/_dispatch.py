"""Send a call to an upstream, waiting out 429s and retrying transient failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from .._calls import Call
from .._clock import Clock
from .._errors import UpstreamUnavailableError
from ..config import AffinityConfig, RetryConfig
from ..flow import (
    RETRYABLE_STATUSES,
    Backoff,
    HedgeDelay,
    Outcome,
    RetryBudget,
    apply_feedback,
    retry_after,
    settled_within,
)
from ..monitor import Counter, Histogram, Metrics, OpMeterBook
from ..monitor.names import (
    COLD_RACES,
    HEDGES,
    RETRIES,
    RETRY_BUDGET_SPENT,
    UPSTREAM_ERRORS,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_REQUESTS,
    UPSTREAM_RESPONSES,
)
from ..route import Attempt, Router
from ..trace import trace_attempt
from ._cache_hints import CacheHints
from ._upstream import Lease, Upstream
from ._wire_response import UpstreamResponse

__all__ = ["Dispatcher", "Exchange"]

# The headers an upstream reports its remaining rate limit in (OpenAI's, Anthropic's).
_FEEDBACK_HEADERS = frozenset(
    {
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    }
)
# Statuses that mean "too much load": the adaptive concurrency limit backs off
# (529 is Anthropic's "overloaded").
_OVERLOADED = frozenset({503, 504, 529})


@dataclass(slots=True)
class Exchange:
    """The final upstream response; with streaming its body is unread and ``lease`` held."""

    upstream: Upstream
    response: UpstreamResponse
    lease: Lease
    attempt: Attempt | None = None
    # The model it was sent as: the call's own, or the fallback it moved on to.
    model: str = ""

    async def aclose(self, outcome: Outcome = "ok") -> None:
        try:
            await self.response.aclose()
        finally:
            self.release(outcome)

    def release(self, outcome: Outcome = "ok") -> None:
        """Free the upstream slot; alone, for an answer read whole (nothing left to close)."""
        self.lease.release(outcome)
        if self.attempt is not None:
            self.attempt.end()


class _OpSeries:
    """One (upstream, op)'s series: its requests, admission waits and exchange times."""

    __slots__ = ("duration", "queue_wait", "requests")

    def __init__(self, requests: Counter, queue_wait: Histogram, duration: Histogram) -> None:
        self.requests = requests
        self.queue_wait = queue_wait
        self.duration = duration


class _Meters:
    """One upstream's per-call series, looked up once: a label lookup hashes a frozenset."""

    __slots__ = ("_book", "_metrics", "_name", "_ops", "_responses")

    def __init__(self, metrics: Metrics, name: str, book: OpMeterBook) -> None:
        self._metrics = metrics
        self._name = name
        self._book = book
        self._ops: dict[str, _OpSeries] = {}
        self._responses: dict[int, Counter] = {}

    def of(self, op: str) -> _OpSeries:
        found = self._ops.get(op)
        if found is None:
            stage, name = self._book.of(op), self._name
            requests = self._metrics.counter(UPSTREAM_REQUESTS, upstream=name, op=op)
            found = _OpSeries(requests, stage.queue_wait(name), stage.upstream_duration(name))
            self._ops[op] = found
        return found

    def responses(self, status: int) -> Counter:
        found = self._responses.get(status)
        if found is None:
            found = self._responses[status] = self._metrics.counter(
                UPSTREAM_RESPONSES, upstream=self._name, status=str(status)
            )
        return found


class _Attempts:
    """The retry state of one call, and its prompt prefix (routed on at every attempt)."""

    __slots__ = ("failures", "last", "limited", "prefix")

    def __init__(self, prefix: tuple[int, ...]) -> None:
        self.failures = 0
        self.limited = 0
        self.last: Upstream | None = None
        self.prefix = prefix


class Dispatcher:
    """Picks an upstream, waits for admission, sends, and decides about retries.

    The router picks the deployment and hears how every attempt went (its
    latency, or that it failed): its balancer and health checks run on that.
    A 429 is absorbed: the upstream's limiter holds every call for the
    ``Retry-After`` it gave, then the call goes again. 5xx answers and
    connection failures are retried with full-jitter backoff, on another
    deployment when the model has one, while the upstream's retry budget
    lasts. Ops listed in ``[retry] hedge`` send a second copy once a call is
    slower than most, and take whichever answers first.
    """

    __slots__ = (
        "_backoff",
        "_budgets",
        "_clock",
        "_finishing",
        "_hedges",
        "_hints",
        "_meters",
        "_metrics",
        "_op_meters",
        "_probing_on",
        "_retry",
        "_router",
        "traced",
    )

    def __init__(
        self,
        router: Router[Upstream],
        retry: RetryConfig,
        clock: Clock,
        metrics: Metrics,
        backoff: Backoff,
        hints: CacheHints | None = None,
        meters: OpMeterBook | None = None,
    ) -> None:
        self._router = router
        self._op_meters = meters or OpMeterBook(metrics)
        self._finishing: set[asyncio.Task[None]] = set()  # losing copies left to finish
        self._hints = hints or CacheHints(AffinityConfig())
        self._probing_on: asyncio.AbstractEventLoop | None = None
        self._retry = retry
        self._clock = clock
        self._metrics = metrics
        self._backoff = backoff
        self._budgets: dict[str, RetryBudget] = {}
        self._meters: dict[str, _Meters] = {}
        self._hedges: dict[str, HedgeDelay] = {
            op: HedgeDelay(retry.hedge_quantile) for op in retry.hedge
        }
        # Set by the engine while [tracing] is on: each attempt then tells the call's span.
        self.traced = False

    def send(self, call: Call, *, stream: bool = False) -> Coroutine[Any, Any, Exchange]:
        """The final exchange of ``call``, to await; the caller closes it.

        A plain method handing back the coroutine that does the work: one
        coroutine layer less on every call.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._probing_on:  # once per event loop, not per call
            self._router.start_probes()
            self._probing_on = loop
        # Only deployments of the call's own API: a call is never translated.
        pool = self._router.pool(call.model, call.api.upstream_api)
        prefix: tuple[int, ...] = ()
        if pool.prefixes is not None:
            prefix = call.api.prefix(call.body, self._router.affinity.min_tokens)
            if prefix:
                call = self._hints.applied(call, prefix)
        hedge = None if stream else self._hedges.get(call.op)
        if hedge is None or hedge.current is None:
            upstream = self._router.pick_in(pool, None, prefix)
            if pool.warming and call.api.shares(call) and self._router.race(upstream, call.model):
                return self._raced(call, stream, upstream, prefix)
            return self._send_one(call, stream, upstream, prefix)
        return self._hedged(call, hedge.current, prefix)

    def budget(self, upstream: Upstream) -> RetryBudget:
        """The retry budget of ``upstream``, made on first use."""
        budget = self._budgets.get(upstream.name)
        if budget is None:
            budget = RetryBudget(
                self._retry.budget_ratio, self._retry.budget_min_per_second, clock=self._clock
            )
            self._budgets[upstream.name] = budget
        return budget

    def _meters_of(self, upstream: Upstream) -> _Meters:
        meters = self._meters.get(upstream.name)
        if meters is None:
            meters = _Meters(self._metrics, upstream.name, self._op_meters)
            self._meters[upstream.name] = meters
        return meters

    async def _send_one(
        self, call: Call, stream: bool, upstream: Upstream, prefix: tuple[int, ...]
    ) -> Exchange:
        state = _Attempts(prefix)
        self.budget(upstream).record_attempt()
        while True:
            exchange = await self._try(upstream, call, stream, state)
            if exchange is not None:
                return exchange
            upstream = self._router.pick(call.model, state.last, call.api.upstream_api, prefix)

    async def _hedged(self, call: Call, delay: float, prefix: tuple[int, ...]) -> Exchange:
        """Send; if no answer within ``delay``, send a copy elsewhere and take the first."""
        api = call.api.upstream_api
        primary = self._router.pick(call.model, None, api, prefix)
        first = asyncio.ensure_future(self._send_one(call, False, primary, prefix))
        if await settled_within(first, delay, self._clock):
            return first.result()
        spare = self._router.pick(call.model, primary, api)  # anywhere else: not by prefix
        if not self.budget(spare).try_spend():
            return await first
        self._metrics.counter(HEDGES, op=call.op).inc()
        second = asyncio.ensure_future(self._send_one(call, False, spare, prefix))
        return await first_success(first, second)

    async def _raced(
        self, call: Call, stream: bool, unknown: Upstream, prefix: tuple[int, ...]
    ) -> Exchange:
        """Send to a deployment not yet heard from and to another at once; the first answer wins.

        The unknown one's copy is not cancelled if it loses: its answer is what
        tells its latency (a cancelled copy only says "slower than the winner").
        """
        other = self._router.pick(call.model, unknown, call.api.upstream_api)
        self._metrics.counter(COLD_RACES, op=call.op).inc()
        first = asyncio.ensure_future(self._send_one(call, stream, unknown, prefix))
        second = asyncio.ensure_future(self._send_one(call, stream, other, prefix))
        unknown_too = () if self._router.answered(other, call.model) else (second,)
        return await first_success(first, second, self._finishing, (first, *unknown_too))

    async def aclose(self) -> None:
        """Stop the losing copies of races still running."""
        for task in list(self._finishing):
            task.cancel()
        await asyncio.gather(*self._finishing, return_exceptions=True)

    async def _try(
        self, upstream: Upstream, call: Call, stream: bool, state: _Attempts
    ) -> Exchange | None:
        attempt = self._router.attempt(upstream, call.model, state.prefix)
        try:
            lease = await upstream.admit(call)
        except BaseException:
            attempt.end()
            raise
        meters = self._meters_of(upstream)
        series = meters.of(call.op)
        series.queue_wait.observe(lease.queued_s)
        series.requests.inc()
        started = self._clock.now()
        attempt.sent()
        try:
            response = await upstream.exchange(call, stream=stream)
        except httpx.TransportError as exc:
            # A timeout says the upstream is overloaded; a refused connection does not.
            lease.release("dropped" if isinstance(exc, httpx.TimeoutException) else "ignored")
            attempt.failed()
            attempt.end()
            if self.traced:
                ended = self._clock.now()
                trace_attempt(upstream.name, lease.queued_s, started, ended, type(exc).__name__)
            timed_out = isinstance(exc, httpx.TimeoutException)
            await self._after_failure(upstream, state, f"{type(exc).__name__}: {exc}", timed_out)
            return None
        except BaseException:  # cancelled (a hedge lost, the caller left): free the slot
            lease.release("ignored")
            attempt.end()
            raise
        attempt.answered(response.status_code)
        took = self._clock.now() - started
        series.duration.observe(took)
        if self.traced:
            status = response.status_code
            trace_attempt(upstream.name, lease.queued_s, started, started + took, status)
        hedge = self._hedges.get(call.op)
        if hedge is not None and response.status_code < 300:
            hedge.observe(took)
        exchange = Exchange(upstream, response, lease, attempt, call.model)
        headers = response.headers
        if not _FEEDBACK_HEADERS.isdisjoint(headers):  # one pass over the (lower-case) names
            await apply_feedback(lease.limiter, headers, call.tokens)
        status = response.status_code
        meters.responses(status).inc()
        if status < 400:  # final: no retry to weigh (and no coroutine to make for it)
            return exchange
        return await self._judge(exchange, state)

    async def _judge(self, exchange: Exchange, state: _Attempts) -> Exchange | None:
        """Return the exchange if it is final; otherwise close it and prepare the retry."""
        status = exchange.response.status_code
        name = exchange.upstream.name
        if status == 429 and state.limited < self._retry.rate_limited_attempts:
            await self._discard(exchange, "dropped")
            state.limited += 1
            self._metrics.counter(UPSTREAM_RATE_LIMITED, upstream=name).inc()
            wait = retry_after(exchange.response.headers)
            await exchange.lease.limiter.hold(
                wait if wait is not None else self._backoff.delay(state.limited - 1)
            )
            return None
        if status in RETRYABLE_STATUSES and self._no_retry(exchange.upstream, state) is None:
            await self._discard(exchange, "dropped" if status in _OVERLOADED else "ignored")
            await self._retry_after_backoff(exchange.upstream, state)
            return None
        return exchange

    async def _after_failure(
        self, upstream: Upstream, state: _Attempts, reason: str, timed_out: bool
    ) -> None:
        """Wait for the retry, or raise when no retry is left for this call."""
        refusal = self._no_retry(upstream, state)
        if refusal is not None:
            message = f"{reason} ({refusal})"
            raise UpstreamUnavailableError(upstream.name, message, timed_out=timed_out)
        await self._retry_after_backoff(upstream, state)

    def _no_retry(self, upstream: Upstream, state: _Attempts) -> str | None:
        """Why this failed attempt may not be retried, or None (and a retry is booked)."""
        self._metrics.counter(UPSTREAM_ERRORS, upstream=upstream.name).inc()
        if state.failures >= self._retry.attempts:
            return f"after {state.failures + 1} attempts"
        budget = self.budget(upstream)
        if not budget.try_spend():
            self._metrics.counter(RETRY_BUDGET_SPENT, upstream=upstream.name).inc()
            return f"retry budget spent: {budget!r}"
        return None

    async def _retry_after_backoff(self, upstream: Upstream, state: _Attempts) -> None:
        self._metrics.counter(RETRIES, upstream=upstream.name).inc()
        await self._clock.sleep(self._backoff.delay(state.failures))
        state.failures += 1
        state.last = upstream

    @staticmethod
    async def _discard(exchange: Exchange, outcome: Outcome) -> None:
        await exchange.response.aread()
        await exchange.aclose(outcome)


async def first_success(
    first: asyncio.Future[Exchange],
    second: asyncio.Future[Exchange],
    finishing: set[asyncio.Task[None]] | None = None,
    left_to_finish: tuple[asyncio.Future[Exchange], ...] = (),
) -> Exchange:
    """The first exchange to arrive; the other is cancelled, or closed if it also arrived.

    If one attempt fails, the other is awaited; only if both fail does the
    first one's error propagate. A loser in ``left_to_finish`` is not
    cancelled but left to finish (then closed) in a task kept in ``finishing``.
    """
    attempts = (first, second)
    winner: asyncio.Future[Exchange] | None = None
    try:
        pending: set[asyncio.Future[Exchange]] = set(attempts)
        while pending and winner is None:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winner = next((a for a in attempts if _succeeded(a)), None)
        return (winner or first).result()
    finally:
        for attempt in attempts:
            if attempt is winner:
                continue
            if attempt in left_to_finish and finishing is not None and not attempt.done():
                task = asyncio.ensure_future(_close_when_done(attempt))
                finishing.add(task)
                task.add_done_callback(finishing.discard)
            else:
                await _abandon(attempt)


def _succeeded(attempt: asyncio.Future[Exchange]) -> bool:
    return attempt.done() and not attempt.cancelled() and attempt.exception() is None


async def _close_when_done(attempt: asyncio.Future[Exchange]) -> None:
    try:
        exchange = await attempt
    except BaseException:  # its failure was booked by its attempt; nobody waits for it
        if not attempt.done():
            attempt.cancel()
        return
    await exchange.aclose()


async def _abandon(attempt: asyncio.Future[Exchange]) -> None:
    """Cancel an attempt nobody will use, or close its exchange if it also finished."""
    if not attempt.done():
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
    elif _succeeded(attempt):
        await attempt.result().aclose()
