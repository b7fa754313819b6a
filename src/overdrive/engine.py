"""The engine: every call goes key → cache → coalesce → admit → route → send → record → fill."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from ._calls import Call, Result, chat_call, embeddings_call, shares_answers
from ._clock import Clock, SystemClock
from ._errors import (
    ConfigError,
    RateLimitedError,
    RequestError,
    UnknownModelError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from ._json import JSONDecodeError, loads
from .cache import TieredCache, request_key
from .cache._build import build_cache
from .coalesce import Coalescer, StreamFlight, StreamReply, replay, sse_lines
from .config import Config, load_config
from .distribute import DistributedRun, TaskFn, distribute
from .doors import cached
from .flow import Backoff, EmbeddingBatches
from .monitor import Histogram, Measure, Metrics, TierFaults, prometheus_text
from .optimize import Analysis, CacheTTL, analyse, engine_tunables
from .optimize._engine_knobs import CacheSwitch
from .optimize._loop import Optimizer
from .resources import ResourceManager
from .route import Router
from .upstream import Dispatcher, Exchange, Upstream, limiters_for
from .upstream._chat_sse import chat_stream_complete, is_error_event

__all__ = ["Overdrive", "Result"]

_TTL_JITTER = 0.1
_NOT_STORED = "overdrive_streams_not_stored_total"

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Overdrive:
    """Puts LLM and embedding calls through one caching, pacing, retrying pipeline.

    >>> od = Overdrive.from_config({"upstreams": [{"name": "a",
    ...     "base_url": "http://127.0.0.1:8080/v1", "models": ["gpt-x"], "rpm": 600}]})
    >>> od.models()
    ['gpt-x']

    Then ``await od.chat(model="gpt-x", messages=[...])``, or hand
    ``od.http_client()`` to ``openai.AsyncOpenAI(http_client=...)``.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        upstream_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        # Cached answers carry the wall time they were stored at, so their age
        # means the same in every process; an injected clock stands in for it.
        self._wall: Callable[[], float] = time.time if clock is None else self._clock.now
        # On the engine's clock, so metric windows move with it (tests step it).
        self.metrics = Metrics(clock=self._clock)
        self._upstreams = [
            Upstream(
                u,
                self._clock,
                upstream_transport,
                limiters_for(u, self._clock, config.redis_url, config.namespace),
            )
            for u in config.upstreams
        ]
        self._rng = rng or random.Random()
        self._router: Router[Upstream] = _router(
            self._upstreams, config, self._clock, self._rng, probes_by_default=clock is None
        )
        backoff = Backoff(config.retry.base, config.retry.cap, self._rng)
        self._dispatcher = Dispatcher(
            self._router, config.retry, self._clock, self.metrics, backoff
        )
        self._flight: Coalescer[Result] = Coalescer()
        # Bounds every stream, whichever door reads it (see SharedStream).
        self._streams = StreamFlight(
            self._clock,
            buffer_bytes=config.gateway.stream_buffer_bytes,
            idle_timeout=config.gateway.stream_idle_timeout,
        )
        self._sampled = config.cache.sampled
        self.metrics.describe(
            _NOT_STORED, "Streams that ended but were not cached: truncated or an error event."
        )
        self.resources = _resource_manager(config)
        # Built even when off (memory only then), so the cache.enabled tunable can turn it on.
        self._cache_switch = CacheSwitch(config.cache.enabled)
        self._cache: TieredCache = (
            build_cache(config.cache, self._clock, config.namespace, config.redis_url)
            if config.cache.enabled
            else build_cache(
                config.cache.model_copy(update={"disk": None, "redis_url": None}), self._clock
            )
        )
        # A failing disk or Redis tier is skipped; this makes sure it is seen.
        self._cache.on_fault = TierFaults(self.metrics, self._clock).report
        self._revalidating: set[bytes] = set()
        self._batches = EmbeddingBatches(
            config.batching.embeddings, self._send, self.metrics, self._clock, self._backlog
        )
        self._ttl = CacheTTL(config.cache.ttl)
        self.tunables = engine_tunables(
            self._upstreams, self._batches, self._ttl, self._clock, self._cache_switch
        )
        self._optimizer: Optimizer | None = None
        self._meters: dict[str, _OpMeters] = {}

    @classmethod
    def from_config(
        cls, source: str | Path | Mapping[str, Any] | Config | None = None, **options: Any
    ) -> Overdrive:
        """Build from a TOML path, a dict of the TOML's shape, or ``$OVERDRIVE_CONFIG``."""
        return cls(load_config(source), **options)

    # -- the doors -------------------------------------------------------------

    async def chat(self, **request: Any) -> dict[str, Any]:
        """A chat completion, with the ``openai`` client's keyword arguments; returns its JSON."""
        if request.get("stream"):
            raise RequestError("stream", "use stream_chat() for streamed completions")
        return self._payload(await self.request(chat_call(request)))

    async def embed(self, input: Any, *, model: str, **request: Any) -> dict[str, Any]:
        """Embeddings for a string or a list of strings; returns the OpenAI JSON."""
        call = embeddings_call({"model": model, "input": input, **request})
        return self._payload(await self.request(call))

    async def stream_chat(self, **request: Any) -> AsyncIterator[dict[str, Any]]:
        """A streamed chat completion: yields each ``chat.completion.chunk`` as it arrives.

        An error event in the stream raises :class:`UpstreamProtocolError`.
        """
        reply = await self.open_stream(chat_call({**request, "stream": True}))
        try:
            if reply.status != 200:
                raise UpstreamStatusError(reply.upstream, reply.status, await reply.aread())
            async for line in sse_lines(reply):
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = loads(line[6:])
                    if is_error_event(event):
                        # An error mid-stream is the upstream failing, not a chunk to use.
                        detail = str(event.get("error") or event)[:200]
                        raise UpstreamProtocolError(reply.upstream, f"stream error: {detail}")
                    yield event
        finally:
            await reply.aclose()

    def distribute(
        self, fn: TaskFn[T, R], items: Iterable[T], **options: Any
    ) -> DistributedRun[T, R]:
        """Run ``await fn(od, item)`` for every item, here or on Ray.

        >>> async for result in od.distribute(agent, questions, concurrency=32):  # doctest: +SKIP
        ...     print(result.index, result.value)

        See :func:`overdrive.distribute.distribute` for the options.
        """
        return distribute(fn, items, engine=self, **options)

    def cached(
        self, ttl: float | str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """``@od.cached(...)``: :func:`overdrive.cached` on this engine's tiers and namespace.

        >>> @od.cached(ttl="10m", tags=["docs"])  # doctest: +SKIP
        ... async def search_docs(query: str) -> list[str]: ...
        """
        if not self._cache_switch.on:
            raise RequestError("cache", "the engine's cache is disabled ([cache] enabled = false)")
        options.setdefault("namespace", self.config.namespace)
        return cached(self._ttl.seconds if ttl is None else ttl, cache=self._cache, **options)

    def http_client(self, **options: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` whose OpenAI API calls go through this engine.

        ``openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())``
        works unchanged: calls are routed by ``model`` to the configured
        upstreams whatever host the client names; other paths pass through.
        """
        from .doors import EngineTransport

        options.setdefault("timeout", None)
        return httpx.AsyncClient(transport=EngineTransport(self), **options)

    # -- the pipeline ----------------------------------------------------------

    async def request(self, call: Call) -> Result:
        """Run a complete (not streamed) call through cache, coalescing and dispatch."""
        started = self._clock.now()
        meters = self._meters_for(call.op)
        meters.requests.inc()
        try:
            if not shares_answers(call, self._sampled):
                return await self._send(call)  # its own sample: no cache, no coalescing
            key = self._key(call.op, call)
            if self._cache_switch.on and call.cache == "default":
                found = await self._cache.get(key)
                if found is not None and self._young_enough(found.value, call):
                    meters.hits.inc()
                    if not found.fresh:
                        self._revalidate(call, key)
                        return _cached_result(found.value, "stale")
                    return _cached_result(found.value)
                meters.misses.inc()
            # Only a cache shared over a Redis lease needs the cross-process step.
            fetch = self._fetch if self._cache.lease is None else self._fetch_once
            result, joined = await self._flight.run(key, lambda: fetch(call, key))
            if joined:
                meters.coalesced.inc()
                return replace(result, source="coalesced")
            return result
        finally:
            meters.duration.observe(self._clock.now() - started)

    async def open_stream(self, call: Call) -> StreamReply:
        """Send a streamed call (paced and retried until its first byte); caller closes it.

        An identical streamed call already in flight is joined instead: the
        joiner gets the same chunks from the first one on, while the stream is
        no bigger than ``[gateway] stream_buffer_bytes``. Only a stream that
        ended with its terminal event and carried no error is stored.
        """
        self.metrics.counter("overdrive_requests_total", op=call.op).inc()
        if not self._router.serves(call.model):  # fail fast, before any queueing
            raise UnknownModelError(call.model, self._router.models())
        opener = functools.partial(self._dispatcher.send, call, stream=True)
        if not shares_answers(call, self._sampled):
            return await self._streams.alone(opener)
        key = self._key(f"{call.op}.stream", call)
        cached = await self._stored_stream(key, call)
        if cached is not None:
            return cached
        keeps = self._cache_switch.on and call.cache != "no-store"
        store = functools.partial(self._store_stream, key) if keeps else None
        reply = await self._streams.open(key, opener, store)
        if reply.source == "coalesced":
            self.metrics.counter("overdrive_coalesced_total", op=call.op).inc()
        return reply

    async def _stored_stream(self, key: bytes, call: Call) -> StreamReply | None:
        """A fresh stored stream for ``key``, played back chunk by chunk, or None."""
        if not self._cache_switch.on or call.cache != "default":
            return None
        found = await self._cache.get(key)
        if found is None or not found.fresh or not self._young_enough(found.value, call):
            self.metrics.counter("overdrive_cache_misses_total", op=call.op).inc()
            return None
        self.metrics.counter("overdrive_cache_hits_total", op=call.op).inc()
        _, chunks, upstream, *_ = found.value
        return replay(list(chunks), upstream)

    async def _store_stream(self, key: bytes, upstream: str, chunks: list[bytes]) -> None:
        """Keep a streamed body that is complete and clean, as its chunks (replayed as a stream)."""
        if not chat_stream_complete(chunks):  # truncated, or it carried an error event
            self.metrics.counter(_NOT_STORED).inc()
            return
        ttl = self._ttl.seconds * (1.0 - _TTL_JITTER * self._rng.random())
        await self._cache.set(key, (200, chunks, upstream, self._wall()), ttl, stale=0.0)

    def _key(self, op: str, call: Call) -> bytes:
        """The cache and coalescing key: a caller's own namespace keeps its answers apart."""
        namespace = self.config.namespace
        if call.namespace:
            namespace = f"{namespace}/{call.namespace}"
        return request_key(op, call.body, namespace, streamed=call.stream)

    def _young_enough(self, value: tuple[Any, ...], call: Call) -> bool:
        """Whether a cached answer is within the call's ``max_age`` (always, without one)."""
        if call.max_age is None:
            return True
        stored_at = value[3] if len(value) > 3 else float("-inf")
        return self._wall() - stored_at <= call.max_age

    async def _fetch_once(self, call: Call, key: bytes) -> Result:
        """Fetch, letting only one process do so when the cache shares a Redis lease."""
        if not self._cache_switch.on or self._cache.lease is None:
            return await self._fetch(call, key)
        return await self._cache.across_processes(
            key, lambda: self._fetch(call, key), _cached_result
        )

    def _revalidate(self, call: Call, key: bytes) -> None:
        """Refresh a stale entry once in the background while it keeps being served."""
        if key in self._revalidating:
            return
        self._revalidating.add(key)
        task = asyncio.ensure_future(self._flight.run(key, lambda: self._fetch(call, key)))
        task.add_done_callback(lambda done: self._revalidated(key, done))

    def _revalidated(self, key: bytes, done: asyncio.Future[Any]) -> None:
        self._revalidating.discard(key)
        if not done.cancelled() and done.exception() is not None:
            self.metrics.counter("overdrive_revalidation_errors_total").inc()

    async def _fetch(self, call: Call, key: bytes) -> Result:
        batches = self._batches
        result = await (batches.submit(call) if batches.takes(call) else self._send(call))
        if result.ok and call.cache != "no-store" and self._cache_switch.on:
            await self._fill(key, result)
        return result

    async def _send(self, call: Call) -> Result:
        """One upstream exchange, its answer checked and its tokens booked."""
        started = self._clock.now()
        exchange = await self._dispatcher.send(call)
        try:
            response = exchange.response
            queued = exchange.lease.queued_s
            result = Result(
                response.status_code, response.content, exchange.upstream.name, queued_s=queued
            )
            refund = self._settle(call, exchange, result) if result.ok else 0
            if refund:
                await exchange.lease.limiter.adjust(refund)
        finally:
            exchange.release()  # the body is read whole: nothing is left to close
        meters = self._meters_for(call.op)
        meters.upstream_duration(result.upstream).observe(self._clock.now() - started)
        return result

    def _settle(self, call: Call, exchange: Exchange, result: Result) -> int:
        """Check the answer's shape and count the tokens it reports.

        Returns the tokens to book on the limiter beyond the call's estimate
        (negative: a refund), when the upstream charges by usage; else 0.
        """
        payload = _parse_object(result.body, result.upstream)
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            return 0
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        exchange.lease.output_tokens = max(completion, 1)
        meters = self._meters_for(call.op)
        meters.prompt_tokens.inc(prompt)
        meters.completion_tokens.inc(completion)
        if exchange.upstream.config.tokens_charged != "usage":
            return 0
        return prompt + completion - call.tokens

    def _meters_for(self, op: str) -> _OpMeters:
        """The series every call of ``op`` reports to, looked up once per op."""
        meters = self._meters.get(op)
        if meters is None:
            meters = self._meters[op] = _OpMeters(self.metrics, op)
        return meters

    def _payload(self, result: Result) -> dict[str, Any]:
        if result.status == 429:
            attempts = self.config.retry.rate_limited_attempts + 1
            raise RateLimitedError(result.upstream, result.body, attempts)
        if not result.ok:
            raise UpstreamStatusError(result.upstream, result.status, result.body)
        return _parse_object(result.body, result.upstream)

    def _fill(self, key: bytes, result: Result) -> Awaitable[None]:
        """Store an answer (the cache's own coroutine: no layer of ours around it)."""
        cache = self._cache
        value = (result.status, result.body, result.upstream, self._wall())
        shared = cache.lease is not None  # waiting processes read it back from Redis
        # Jitter, so answers cached in one burst do not all expire in one burst.
        ttl = self._ttl.seconds * (1.0 - _TTL_JITTER * self._rng.random())
        return cache.set(key, value, ttl, stale=self.config.cache.stale, wait=shared)

    # -- inspection and lifecycle ----------------------------------------------

    def _backlog(self, model: str) -> float:
        """Seconds a call for ``model`` would likely queue: the shortest of its upstreams'."""
        waits = [u.queue(model).backlog() for u in self._upstreams if model in u.models]
        return min(waits, default=0.0)

    def analyse(self) -> Analysis:
        """Where this engine's request time went, and the bottleneck (last 5 minutes)."""
        return analyse(self.metrics, self.stats())

    def optimize(self, **options: Any) -> Optimizer:
        """Start the optimizer loop on this engine (closed with it); see :class:`Optimizer`.

        >>> optimizer = od.optimize(window=10.0, advisory=True)  # doctest: +SKIP
        >>> optimizer.decisions  # doctest: +SKIP
        """
        if self._optimizer is None:
            self._optimizer = Optimizer(self, clock=self._clock, **options)
            self._optimizer.start()
        return self._optimizer

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer loop :meth:`optimize` started, if any."""
        return self._optimizer

    def metrics_text(self) -> str:
        """The engine's metrics in Prometheus text format (serve with ``monitor.CONTENT_TYPE``)."""
        return prometheus_text(self.metrics)

    def measure(self, name: str, **labels: str) -> Measure:
        """Time a block or a function into ``<name>_seconds`` on this engine's registry.

        >>> with od.measure("overdrive_tool_call", tool="search"):  # doctest: +SKIP
        ...     results = search(query)
        """
        return self.metrics.measure(name, **labels)

    def upstreams(self) -> list[Upstream]:
        """The configured upstreams, with their queues and concurrency limits."""
        return list(self._upstreams)

    def models(self) -> list[str]:
        """Every model the configured upstreams serve."""
        return self._router.models()

    def stats(self) -> dict[str, Any]:
        """A plain-data snapshot: metrics, cache and coalescing state."""
        cache = self._cache
        return {
            "metrics": self.metrics.snapshot(),
            "cache": cache.summary() if self._cache_switch.on else None,
            "in_flight": {u.name: u.in_flight for u in self._upstreams},
            "waiting": {q.name: q.waiting for u in self._upstreams for q in u.queues().values()},
            "tunables": {name: knob.value for name, knob in self.tunables.items()},
            "balancer": self._router.balancer,
            "health": self._router.health(),
            "resources": self.resources.snapshot(),
        }

    async def aclose(self) -> None:
        if self._optimizer is not None:
            await self._optimizer.aclose()
        await self._router.aclose()  # stops the health probes
        await self._batches.aclose()
        await self._cache.aclose()
        for upstream in self._upstreams:
            await upstream.aclose()
        await self.resources.aclose()

    async def __aenter__(self) -> Overdrive:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Overdrive(upstreams={[u.name for u in self._upstreams]}, cache={self._cache!r})"


def _router(
    upstreams: list[Upstream],
    config: Config,
    clock: Clock,
    rng: random.Random,
    *,
    probes_by_default: bool,
) -> Router[Upstream]:
    """The router over ``upstreams``; probes are on by default only with the real clock."""
    health = config.routing.health
    probing = health.probes if health.probes is not None else probes_by_default
    return Router(
        upstreams,
        config.routing,
        clock=clock,
        rng=random.Random(rng.random()),
        weight=lambda u: u.weight,
        headroom=Upstream.headroom,
        probe=(lambda u: u.probe(health.probe_path, health.probe_timeout)) if probing else None,
    )


_MIN_MEMORY_BUDGET = 1 << 30
_BUFFER_HEADROOM = 64 << 20


def _resource_manager(config: Config) -> ResourceManager:
    """The engine's resources; the cache's memory is booked first, so it always fits."""
    cache = config.cache
    budget = config.resources.memory
    if budget is None:
        budget = max(_MIN_MEMORY_BUDGET, cache.memory + _BUFFER_HEADROOM)
    manager = ResourceManager(budget)
    if cache.enabled and not manager.try_allocate("cache.memory", cache.memory):
        raise ConfigError(
            "resources.memory",
            f"{budget} bytes cannot hold [cache] memory = {cache.memory} bytes",
        )
    return manager


def _parse_object(body: bytes, upstream: str) -> dict[str, Any]:
    try:
        payload = loads(body)
    except JSONDecodeError:
        raise UpstreamProtocolError(
            upstream, f"answered 2xx with a non-JSON body: {body[:80]!r}"
        ) from None
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(
            upstream, f"answered 2xx with JSON that is not an object: {body[:80]!r}"
        )
    return payload


class _OpMeters:
    """The metric series of one op, so the hot path skips the label lookups."""

    __slots__ = (
        "_metrics",
        "_op",
        "_upstream_durations",
        "coalesced",
        "completion_tokens",
        "duration",
        "hits",
        "misses",
        "prompt_tokens",
        "requests",
    )

    def __init__(self, metrics: Metrics, op: str) -> None:
        self._metrics = metrics
        self._op = op
        self._upstream_durations: dict[str, Histogram] = {}
        self.requests = metrics.counter("overdrive_requests_total", op=op)
        self.duration = metrics.histogram("overdrive_request_duration_seconds", op=op)
        self.hits = metrics.counter("overdrive_cache_hits_total", op=op)
        self.misses = metrics.counter("overdrive_cache_misses_total", op=op)
        self.coalesced = metrics.counter("overdrive_coalesced_total", op=op)
        self.prompt_tokens = metrics.counter("overdrive_tokens_total", op=op, kind="prompt")
        self.completion_tokens = metrics.counter("overdrive_tokens_total", op=op, kind="completion")

    def upstream_duration(self, upstream: str) -> Histogram:
        """The op's upstream exchange times on ``upstream``."""
        found = self._upstream_durations.get(upstream)
        if found is None:
            found = self._upstream_durations[upstream] = self._metrics.histogram(
                "overdrive_upstream_duration_seconds", upstream=upstream, op=self._op
            )
        return found


def _cached_result(value: Any, source: str = "cache") -> Result:
    status, body, upstream, *_ = value  # entries from older versions carry no time
    return Result(status, body, upstream, source)


def _int(value: Any) -> int:
    # ``type() is int``: a bool is an int to isinstance, never a token count.
    return value if type(value) is int and value >= 0 else 0
