"""One configured endpoint (OpenAI-style or Anthropic): its pooled HTTP client, pacing, slots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

import httpx

from .._calls import Call
from .._clock import Clock
from .._errors import QueueTimeoutError
from .._json import dumps
from ..config import UpstreamConfig
from ..flow import (
    GCRA,
    AdaptiveLimit,
    AdmissionQueue,
    ConcurrencyLimit,
    FixedLimit,
    Limiter,
    LimitSpec,
    LocalLimiter,
    Outcome,
    Permit,
    limiter_for,
    settled_within,
)
from ._client import AnswerBounds, UpstreamClient
from ._httpx_client import HttpxClient
from ._httpx_guard import guarded_transport
from ._wire import WirePool, proxy_configured, wire_client_for
from ._wire_response import UpstreamResponse

__all__ = ["Lease", "Upstream", "auth_headers", "client_for"]

# Where the adaptive limit ("auto") starts; it finds its level within seconds.
_AUTO_INITIAL = 16


class Lease:
    """An admitted call: its concurrency slot and the limiter that booked its tokens.

    ``release`` is idempotent; ``output_tokens`` (set once the answer is read)
    lets the adaptive limit judge latency per token.
    """

    __slots__ = ("_permit", "limiter", "output_tokens", "queued_s")

    def __init__(self, permit: Permit, limiter: Limiter, queued_s: float) -> None:
        self._permit = permit
        self.limiter = limiter
        self.queued_s = queued_s
        self.output_tokens = 1

    def release(self, outcome: Outcome = "ok") -> None:
        self._permit.release(outcome, tokens=self.output_tokens)

    def __repr__(self) -> str:
        return f"Lease(queued_s={self.queued_s:.3f}, {self._permit!r})"


class Upstream:
    """Sends calls to one endpoint once its rate limit and concurrency admit them."""

    __slots__ = (
        "_client",
        "_clock",
        "_queues",
        "bounds",
        "concurrency",
        "config",
        "name",
    )

    def __init__(
        self,
        config: UpstreamConfig,
        clock: Clock,
        limiters: dict[str | None, Limiter] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name  # read a few times per call: an attribute, not a property
        # What an answer may weigh; the stream relay reads these too.
        self.bounds = AnswerBounds(
            config.name, config.max_response_head_bytes, config.max_response_bytes
        )
        self._clock = clock
        limiters = limiters or local_limiters(config, clock)
        self._queues = {
            model: AdmissionQueue(
                limiter, clock, max_waiting=config.max_waiting, name=_queue_name(config, model)
            )
            for model, limiter in limiters.items()
        }
        self.concurrency = _concurrency_limit(config, clock)
        # Sized for the highest the limit may be set to at run time, not where it starts.
        connections = max(
            self.concurrency.max_limit if config.concurrency == "auto" else config.max_concurrency,
            self.concurrency.limit,
        )
        self._client = client_for(config, self.bounds, connections)

    @property
    def models(self) -> Sequence[str]:
        return self.config.models

    @property
    def in_flight(self) -> int:
        return self.concurrency.in_flight

    @property
    def weight(self) -> float:
        return self.config.weight

    def headroom(self, model: str) -> float:
        """The share of the rate-limit burst for ``model`` still free now, 0..1.

        0 while a 429 holds it or its burst is booked (calls then queue); 1
        when unlimited or the limit is held elsewhere (Redis: not worth a
        round trip per pick).
        """
        limiter = self.queue(model).limiter
        if not limiter.spec.limited or not isinstance(limiter, LocalLimiter):
            return 1.0
        if limiter.try_now(0, 0) > 0.0:  # books nothing: only a hold makes it wait
            return 0.0
        return min(_free(limiter.requests), _free(limiter.tokens))

    @property
    def _wire(self) -> WirePool | None:
        """The lean client when it sends this endpoint's whole calls (tests and benchmarks)."""
        client = self._client
        return client if isinstance(client, WirePool) else None

    def probe(self, path: str, max_wait: float) -> Awaitable[bool]:
        """GET ``path`` (relative to the base URL), to await; True if it answered below 500 in time.

        The status is all a probe needs: the body is never read, so no health
        page can cost memory.
        """
        return self._client.probe(path, max_wait)

    def queue(self, model: str) -> AdmissionQueue:
        """The admission queue of ``model``: its own, or the endpoint-wide one."""
        return self._queues.get(model) or self._queues[None]

    def queues(self) -> dict[str | None, AdmissionQueue]:
        return dict(self._queues)

    async def admit(self, call: Call) -> Lease:
        """Wait for the rate limit (by priority), then for a free slot, within the deadline."""
        started = self._clock.now()
        queue = self.queue(call.model)
        timeout = call.admission.timeout or self.config.queue_timeout
        await queue.admit(1, call.tokens, priority=call.admission.priority, max_wait=timeout)
        permit = self.concurrency.acquire_now()  # most calls: a free slot, no waiting
        if permit is None:
            left = None if timeout is None else timeout - (self._clock.now() - started)
            permit = await self._slot(queue, left, timeout)
        return Lease(permit, queue.limiter, self._clock.now() - started)

    async def _slot(
        self, queue: AdmissionQueue, left: float | None, allowed: float | None
    ) -> Permit:
        if left is None:
            # No deadline: nothing to race the wait against, so no task and no
            # timer; acquire takes a free slot at once and gives a waiting
            # one up itself if the caller is cancelled.
            return await self.concurrency.acquire()
        acquiring = asyncio.ensure_future(self.concurrency.acquire())
        try:
            if await settled_within(
                acquiring, max(left, 0.0) if left is not None else None, self._clock
            ):
                return acquiring.result()
        except BaseException:
            acquiring.cancel()
            raise
        acquiring.cancel()  # the limit hands a slot granted meanwhile on
        raise QueueTimeoutError(queue.name, allowed or 0.0)

    def exchange(self, call: Call, *, stream: bool) -> Awaitable[UpstreamResponse]:
        """POST the call (to await); with ``stream`` the body is left unread for the caller."""
        if stream:  # the relay reads the body, and bounds it
            return self._client.stream(call.path, dumps(call.body))
        return self._client.post(call.path, dumps(call.body))

    async def aclose(self) -> None:
        for queue in self._queues.values():
            await queue.aclose()
            await queue.limiter.aclose()
        await self._client.aclose()

    async def close_idle(self) -> None:
        """Close the pooled connections now: the event loop they belong to is ending."""
        await self._client.close_idle()
        for queue in self._queues.values():
            await queue.limiter.close_idle()

    async def forget_loop(self) -> None:
        """The event loop its queues, slots and connections were bound to is gone: afresh.

        Its rate limits hold on: what the limiters booked is time, not loop state.
        """
        for queue in self._queues.values():
            queue.forget_loop()
        self.concurrency.forget_loop()
        await self._client.forget_loop()

    def __repr__(self) -> str:
        return (
            f"Upstream({self.name!r}, concurrency={self.concurrency!r}, "
            f"queues={list(self._queues.values())!r})"
        )


def client_for(config: UpstreamConfig, bounds: AnswerBounds, connections: int) -> UpstreamClient:
    """The client of an endpoint: the lean one where it applies, else httpx alone.

    httpx sends every call where :func:`~overdrive.upstream._wire.wire_client_for`
    says the lean client does not apply; it sends the lean client's streams
    and probes too. Both send the endpoint's :func:`auth_headers`.
    """
    headers = auth_headers(config)
    connect_timeout = min(config.timeout, 10.0)
    limits = httpx.Limits(max_connections=connections)
    http = HttpxClient(
        config.base_url,
        bounds=bounds,
        timeout=config.timeout,
        limits=limits,
        transport=_guarded(limits),
        connect_timeout=connect_timeout,
        headers=headers,
    )
    wire = wire_client_for(
        config.base_url,
        http,
        api_key=None,
        headers=headers,
        connections=connections,
        timeout=config.timeout,
        connect_timeout=connect_timeout,
        bounds=bounds,
    )
    return http if wire is None else wire


def auth_headers(config: UpstreamConfig) -> dict[str, str]:
    """The headers every request to the endpoint carries, as its API wants them.

    An OpenAI-compatible endpoint takes its key as a Bearer token; Anthropic's
    takes it in ``x-api-key`` beside the ``anthropic-version`` it speaks, and
    never an ``Authorization`` header.

    >>> from overdrive.config import UpstreamConfig
    >>> claude = UpstreamConfig(name="c", base_url="https://api.anthropic.com/v1",
    ...                         api="anthropic", models=["claude-x"])
    >>> auth_headers(claude)
    {'anthropic-version': '2023-06-01'}
    """
    key = config.api_key()
    if config.api == "anthropic":
        headers = {"anthropic-version": config.anthropic_version}
        return headers | {"x-api-key": key} if key else headers
    return {"authorization": f"Bearer {key}"} if key else {}


def _guarded(limits: httpx.Limits) -> httpx.AsyncHTTPTransport | None:
    """httpx's transport with the framing guard, or None (httpx's own) where a proxy is set.

    Through a proxy httpx's own transports send (given one, httpx would not
    read the proxy from the environment), without the guard.
    """
    return None if proxy_configured() else guarded_transport(limits)


def local_limiters(config: UpstreamConfig, clock: Clock) -> dict[str | None, Limiter]:
    """In-memory limiters: one per model with its own limits, one for the rest (``None``)."""
    return {model: LocalLimiter(spec, clock) for model, spec in limit_specs(config).items()}


def limiters_for(
    config: UpstreamConfig, clock: Clock, redis_url: str | None, namespace: str
) -> dict[str | None, Limiter]:
    """Shared limiters when a Redis is configured and ``shared_limits`` is on, else local."""
    shared = redis_url if config.shared_limits else None
    return {
        model: limiter_for(
            spec, clock, name=_queue_name(config, model), redis_url=shared, namespace=namespace
        )
        for model, spec in limit_specs(config).items()
    }


def limit_specs(config: UpstreamConfig) -> dict[str | None, LimitSpec]:
    """What each limiter of ``config`` enforces, keyed by model (``None``: every other model)."""
    specs: dict[str | None, LimitSpec] = {None: LimitSpec(config.rpm, config.tpm, config.burst)}
    for model, limits in config.model_limits.items():
        specs[model] = LimitSpec(limits.rpm, limits.tpm, config.burst)
    return specs


def _free(limit: GCRA | None) -> float:
    """The share of a GCRA's burst not booked ahead of now."""
    if limit is None:
        return 1.0
    # How long until a whole burst would fit is exactly how far it is booked ahead.
    ahead = limit.wait_for(limit.burst / limit.interval)
    return max(0.0, 1.0 - ahead / limit.burst)


def _queue_name(config: UpstreamConfig, model: str | None) -> str:
    return config.name if model is None else f"{config.name}/{model}"


def _concurrency_limit(config: UpstreamConfig, clock: Clock) -> ConcurrencyLimit:
    if config.concurrency != "auto":
        return FixedLimit(config.concurrency, clock=clock)
    low, high = config.min_concurrency, config.max_concurrency
    initial = min(high, max(low, _AUTO_INITIAL))
    return AdaptiveLimit(initial, min_limit=low, max_limit=high, clock=clock)
