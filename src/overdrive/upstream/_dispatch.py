"""Send a call to an upstream, waiting out 429s and retrying transient failures."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from .._calls import Call
from .._clock import Clock
from .._errors import UpstreamUnavailableError
from ..config import RetryConfig
from ..flow import RETRYABLE_STATUSES, Backoff, Outcome, apply_feedback, retry_after
from ..monitor import Metrics
from ..route import Router
from ._upstream import Lease, Upstream

__all__ = ["Dispatcher", "Exchange"]

# Statuses that mean "too much load": the adaptive concurrency limit backs off.
_OVERLOADED = frozenset({503, 504})


@dataclass(slots=True)
class Exchange:
    """The final upstream response; with streaming its body is unread and ``lease`` held."""

    upstream: Upstream
    response: httpx.Response
    lease: Lease

    async def aclose(self, outcome: Outcome = "ok") -> None:
        await self.response.aclose()
        self.lease.release(outcome)


class _Attempts:
    """The retry state of one call."""

    __slots__ = ("failures", "last", "limited")

    def __init__(self) -> None:
        self.failures = 0
        self.limited = 0
        self.last: Upstream | None = None


class Dispatcher:
    """Picks an upstream, waits for admission, sends, and decides about retries.

    A 429 is absorbed: the upstream's limiter holds every call for the
    ``Retry-After`` it gave, then the call goes again. 5xx answers and
    connection failures are retried with full-jitter backoff, on another
    deployment when the model has one.
    """

    __slots__ = ("_backoff", "_clock", "_metrics", "_retry", "_router")

    def __init__(
        self,
        router: Router[Upstream],
        retry: RetryConfig,
        clock: Clock,
        metrics: Metrics,
        backoff: Backoff,
    ) -> None:
        self._router = router
        self._retry = retry
        self._clock = clock
        self._metrics = metrics
        self._backoff = backoff

    async def send(self, call: Call, *, stream: bool = False) -> Exchange:
        state = _Attempts()
        while True:
            upstream = self._router.pick(call.model, avoid=state.last)
            exchange = await self._try(upstream, call, stream, state)
            if exchange is not None:
                return exchange

    async def _try(
        self, upstream: Upstream, call: Call, stream: bool, state: _Attempts
    ) -> Exchange | None:
        lease = await upstream.admit(call)
        self._metrics.histogram("overdrive_queue_wait_seconds", upstream=upstream.name).observe(
            lease.queued_s
        )
        self._metrics.counter(
            "overdrive_upstream_requests_total", upstream=upstream.name, op=call.op
        ).inc()
        try:
            response = await upstream.exchange(call, stream=stream)
        except httpx.TransportError as exc:
            # A timeout says the upstream is overloaded; a refused connection does not.
            lease.release("dropped" if isinstance(exc, httpx.TimeoutException) else "ignored")
            await self._after_failure(upstream, state, f"{type(exc).__name__}: {exc}")
            return None
        exchange = Exchange(upstream, response, lease)
        await self._learn(exchange, call)
        return await self._judge(exchange, state)

    async def _learn(self, exchange: Exchange, call: Call) -> None:
        headers = exchange.response.headers
        if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
            await apply_feedback(exchange.lease.limiter, headers, call.tokens)

    async def _judge(self, exchange: Exchange, state: _Attempts) -> Exchange | None:
        """Return the exchange if it is final; otherwise close it and prepare the retry."""
        status = exchange.response.status_code
        name = exchange.upstream.name
        self._metrics.counter(
            "overdrive_upstream_responses_total", upstream=name, status=str(status)
        ).inc()
        if status == 429 and state.limited < self._retry.rate_limited_attempts:
            await self._discard(exchange, "dropped")
            state.limited += 1
            self._metrics.counter("overdrive_upstream_rate_limited_total", upstream=name).inc()
            wait = retry_after(exchange.response.headers)
            await exchange.lease.limiter.hold(
                wait if wait is not None else self._backoff.delay(state.limited - 1)
            )
            return None
        if status in RETRYABLE_STATUSES and state.failures < self._retry.attempts:
            await self._discard(exchange, "dropped" if status in _OVERLOADED else "ignored")
            await self._after_failure(exchange.upstream, state, f"HTTP {status}")
            return None
        return exchange

    async def _after_failure(self, upstream: Upstream, state: _Attempts, reason: str) -> None:
        self._metrics.counter("overdrive_upstream_errors_total", upstream=upstream.name).inc()
        if state.failures >= self._retry.attempts:
            raise UpstreamUnavailableError(
                upstream.name, f"{reason} (after {state.failures + 1} attempts)"
            )
        self._metrics.counter("overdrive_retries_total", upstream=upstream.name).inc()
        await self._clock.sleep(self._backoff.delay(state.failures))
        state.failures += 1
        state.last = upstream

    @staticmethod
    async def _discard(exchange: Exchange, outcome: Outcome) -> None:
        await exchange.response.aread()
        await exchange.aclose(outcome)
