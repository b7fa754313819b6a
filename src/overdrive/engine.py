"""The engine: the stages assembled, in the order a call runs them.

key → cache → coalesce → batch → route → admit → send → record → fill. Admission
is to the upstream the router picked (its rate limits, then a slot), so route
comes before admit. Each stage lives in its own package (cache/_stage.py for
the cache and its fill, upstream/_send.py for the send); ``_assembly.py``
builds and wires them, ``_stream_stage.py`` runs a streamed call through
them, and this module puts a complete call through them and gives the
engine its methods. docs/architecture.md draws the whole pipeline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from ._assembly import assemble
from ._calls import Call, Result, chat_call, embeddings_call, shares_answers
from ._clock import Clock, SystemClock
from ._errors import (
    ConfigError,
    RequestError,
    UpstreamProtocolError,
    UpstreamUnavailableError,
)
from ._forward import Forwarder
from ._home import EngineLoopError, HomeGone, HomeLoop
from ._lifecycle import Lifecycle
from ._semantic_stage import Looked, SemanticStage
from ._stream_stage import StreamStage
from .cache import StoredAnswer, call_key
from .coalesce import RelayedReply, StreamFlight, StreamReply
from .config import Config, load_config
from .distribute import DistributedRun, TaskFn, distribute
from .doors import Answer, Flavour, Passage, UnknownPaths, cached, make_client
from .monitor import Alerts, Measure, build_alerts, prometheus_text, sum_by
from .monitor.names import COST
from .optimize import LAST_RUN, Analysis, Optimizer, analyse, save_run, tool_tunables
from .tools import McpSession, McpTools, Toolbox, ToolRunner, tool
from .trace import Tracing, build_metrics_exporter, build_tracer
from .upstream import Upstream, falls_back

if TYPE_CHECKING:
    import httpx
    import httpx2

    from .cache.semantic import SemanticTier
    from .dashboard import DashboardServer

__all__ = ["Overdrive", "Result"]

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
        self, config: Config, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        # Cached answers carry the wall time they were stored at, so their age
        # means the same in every process; an injected clock stands in for it.
        self._wall: Callable[[], float] = time.time if clock is None else self._clock.now
        self._rng = rng or random.Random()
        # First: a missing otel extra fails before any part is built (and left unclosed).
        self._tracer = build_tracer(
            config.tracing, self._clock, {u.name: u.base_url for u in config.upstreams}
        )
        # Likewise a wrong OTEL_* metrics variable; the exporter is made once the registry is.
        exporter = build_metrics_exporter(config.tracing, self._clock)
        parts = assemble(config, self._clock, self._rng, self._wall, probes=clock is None)
        self.metrics, self._meters = parts.metrics, parts.meters
        self.tunables, self.resources = parts.tunables, parts.resources
        self._upstreams, self._router = parts.send.upstreams, parts.send.router
        self._aliases = parts.send.aliases  # [[models]] by name
        self._sender, self._batches = parts.send.sender, parts.batches
        self._cache, self._stage = parts.cache.tiers, parts.cache.stage
        self._cache_switch, self._ttl = parts.cache.switch, parts.cache.ttl
        self._sampled = config.cache.sampled
        self._semantic = self._semantic_stage(config)
        # Bounds every stream, whichever door reads it (see SharedStream).
        flight = StreamFlight(
            self._clock,
            buffer_bytes=config.gateway.stream_buffer_bytes,
            idle_timeout=config.gateway.stream_idle_timeout,
        )
        self._streams = StreamStage(
            parts,
            flight,
            self._key,
            self._wall,
            self._sampled,
            self._semantic,
            ask_usage=config.doors.ask_stream_usage,
        )
        self._forwarder = Forwarder(self._upstreams, self._meters, self._clock)
        self._optimizer: Optimizer | None = None
        # The event loop the state above is bound to (see _home.py).
        self._home = HomeLoop()
        self._tools = Toolbox(
            clock=self._clock,
            metrics=self.metrics,
            stage=self._stage if self._cache_switch.on else None,
            own_cache=False,
            namespace=config.namespace,
            entries=config.tools,
            rng=self._rng,
            retry=config.retry,
            redis_url=config.redis_url,
            home=self._home,
        )
        self._tools.on_runner(self._tune_tool)
        self._life = Lifecycle(parts, self._streams, self._forwarder, self._tools)
        self._life.tracer = self._tracer
        parts.send.dispatcher.traced = self._tracer is not None
        self._life.semantic = None if self._semantic is None else self._semantic.tier
        self._home.on_rebind(self._life.forget_loop)
        self._home.on_loop_end(self._life.close_idle)
        self._home.closer = self._life.close
        # [alerts] over this engine's metrics, on its clock (closed with it).
        self._alerts = self._life.alerts = build_alerts(config.alerts, self.metrics, self._clock)
        # [tracing] metrics: the registry over OTLP, on the home loop (flushed when closed).
        made = None if exporter is None else exporter(self.metrics)
        self._export = self._life.metrics_export = made
        self._start_alerts()
        self._home.on_arrive(self._start_alerts)  # an engine made outside a loop, at first use

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
        return self._sender.payload(await self.request(chat_call(request)))

    async def embed(self, input: Any, *, model: str, **request: Any) -> dict[str, Any]:
        """Embeddings for a string or a list of strings; returns the OpenAI JSON."""
        call = embeddings_call({"model": model, "input": input, **request})
        return self._sender.payload(await self.request(call))

    def stream_chat(self, **request: Any) -> AsyncIterator[dict[str, Any]]:
        """A streamed chat completion: yields each ``chat.completion.chunk`` as it arrives.

        An error event in the stream raises :class:`UpstreamProtocolError`.
        """
        return self._streams.events(chat_call({**request, "stream": True}), self.open_stream)

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

    def tool(
        self, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """``@od.tool("search", rpm=60)``: :func:`overdrive.tools.tool` on this engine's parts.

        The tool shares the engine's clock, metrics, cache, ``[retry]``
        backoff and budget, Redis (its rate limit is shared) and event loop;
        its knobs join ``od.tunables`` as ``tool.<name>.*``.
        """
        return tool(name, box=self._tools, **options)

    @property
    def semantic(self) -> SemanticTier | None:
        """The semantic tier (``[cache.semantic]``), or None while it is off.

        ``od.semantic.summary()`` tells its hits, refusals by check and size;
        ``await od.semantic.settle()`` waits until the questions of answers
        just fetched are remembered (they are, in the background).
        """
        return None if self._semantic is None else self._semantic.tier

    @property
    def tracer(self) -> Tracing | None:
        """The tracer ``[tracing]`` turned on (``od.tracer.force_flush()``), or None while off."""
        return self._tracer

    @property
    def tools(self) -> Toolbox:
        """The engine's tools: their runners by name (``od.tools.runners``)."""
        return self._tools

    def mcp(self, session: McpSession, *, server: str, **options: Any) -> McpTools:
        """An MCP client session whose tool calls go through this engine's tool door.

        >>> docs = od.mcp(session, server="docs", rpm=120, concurrency=4)  # doctest: +SKIP
        >>> await docs.call_tool("search", {"query": "retry budget"})  # doctest: +SKIP

        See :class:`overdrive.tools.McpTools` for what is cached and how it is paced.
        """
        return McpTools(session, box=self._tools, server=server, **options)

    def _tune_tool(self, runner: ToolRunner) -> None:
        for knob in tool_tunables(runner):
            self.tunables.add(knob)

    @overload
    def http_client(
        self,
        *,
        sync: Literal[False] = False,
        flavour: Literal["httpx2"] = "httpx2",
        unknown_paths: UnknownPaths | None = None,
        **options: Any,
    ) -> httpx2.AsyncClient: ...
    @overload
    def http_client(
        self,
        *,
        sync: Literal[True],
        flavour: Literal["httpx2"] = "httpx2",
        unknown_paths: UnknownPaths | None = None,
        **options: Any,
    ) -> httpx2.Client: ...
    @overload
    def http_client(
        self,
        *,
        sync: Literal[False] = False,
        flavour: Literal["httpx"],
        unknown_paths: UnknownPaths | None = None,
        **options: Any,
    ) -> httpx.AsyncClient: ...
    @overload
    def http_client(
        self,
        *,
        sync: Literal[True],
        flavour: Literal["httpx"],
        unknown_paths: UnknownPaths | None = None,
        **options: Any,
    ) -> httpx.Client: ...
    def http_client(
        self,
        *,
        sync: bool = False,
        flavour: Flavour = "httpx2",
        unknown_paths: UnknownPaths | None = None,
        **options: Any,
    ) -> httpx2.AsyncClient | httpx2.Client | httpx.AsyncClient | httpx.Client:
        """An HTTP client whose API calls go through this engine, whatever host it names.

        ``openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())``
        and ``openai.OpenAI(http_client=od.http_client(sync=True))`` work
        unchanged: calls are routed by ``model`` to the configured upstreams.
        The default flavour is httpx2 (what openai 3.x takes);
        ``flavour="httpx"`` gives an ``httpx`` client for libraries on httpx.
        A sync client may be used from many threads at once; with no event
        loop running the engine runs on a loop thread of its own (stopped by
        :meth:`close`). Paths no adapter knows follow ``unknown_paths``
        (``[doors] unknown_paths`` when None). ``options`` go to the client.

        >>> sync_client = od.http_client(sync=True)  # doctest: +SKIP
        >>> openai.OpenAI(api_key="unused", http_client=sync_client)  # doctest: +SKIP
        """
        unknown = unknown_paths or self.config.doors.unknown_paths
        return make_client(self, flavour, sync, unknown, options)

    # -- the pipeline ----------------------------------------------------------

    async def request(self, call: Call) -> Result:
        """Run a complete (not streamed) call through cache, coalescing and dispatch."""
        # One compare on the fast path; other loops: see _home.py.
        if asyncio.get_running_loop() is not self._home.loop and not await self._home.arrive():
            return await self._home.forward(lambda: self.request(call))
        if call.model in self._aliases:  # no call at all for a model without an alias
            call = self._aliases[call.model].apply(call)
        started = self._clock.now()
        meters = self._meters.of(call.op)
        meters.requests.inc()
        span = None if self._tracer is None else self._tracer.start(call, started)
        try:
            if not shares_answers(call, self._sampled):
                result = await self._sender.send(call)  # its own sample: no cache, no coalescing
                if span is not None:
                    span.computed(result, False)
                return result
            key = self._key(call)
            stage = self._stage
            looked = None
            if self._cache_switch.on and call.cache == "default":
                found = await stage.lookup(key, call.max_age)
                if span is not None:
                    span.looked(found)
                if found is not None:
                    meters.hits.inc()
                    if found.fresh:
                        return _cached_result(found.value, call.model)
                    stage.refresh_once(key, lambda: self._fetch(call, key))
                    return _cached_result(found.value, call.model, "stale")
                if self._semantic is not None:
                    looked = await self._semantic.lookup(call)
                    if span is not None:
                        span.semantic(looked.answer is not None, looked.similarity)
                    if looked.answer is not None:
                        meters.hits.inc()
                        return _semantic_result(looked, call.model)
                meters.misses.inc()
            # Other processes read the answer back from the cache: only while it is on.
            read = _cached_result if self._cache_switch.on else None
            fetch = lambda: self._fetch(call, key, looked)  # noqa: E731 (one closure, not two)
            result, joined = await stage.compute_once(key, fetch, read)
            if span is not None:
                span.computed(result, joined)
            if joined:
                meters.coalesced.inc()
                return replace(result, source="coalesced", cost=0.0)  # the first caller paid
            # Read back from another process's answer (see compute_once), which names no model.
            return result if result.model else replace(result, model=call.model)
        except BaseException as exc:
            if span is not None:
                span.fail(exc)
            raise
        finally:
            meters.duration.observe(self._clock.now() - started)
            if span is not None:
                span.end()

    async def open_stream(self, call: Call) -> StreamReply:
        """Send a streamed call (paced and retried until its first byte); caller closes it.

        An identical streamed call already in flight is joined instead: the
        joiner gets the same chunks from the first one on, while the stream is
        no bigger than ``[gateway] stream_buffer_bytes``. Only a stream that
        ended with its terminal event and carried no error is stored.
        """
        home = self._home
        if asyncio.get_running_loop() is home.loop or await home.arrive():
            if self._tracer is not None:  # a span to the first byte (see docs/tracing.md)
                return await self._tracer.stream(call, self._streams.open)
            return await self._streams.open(call)
        try:
            reply = await home.elsewhere(self.open_stream(call))
        except HomeGone:
            return await self.open_stream(call)
        return RelayedReply(reply, home.elsewhere)

    async def forward(self, passage: Passage) -> Answer:
        """Send a request no adapter knows to the upstream serving it (see ``_forward.py``)."""
        if asyncio.get_running_loop() is not self._home.loop and not await self._home.arrive():
            return await self._home.forward(lambda: self.forward(passage))
        return await self._forwarder.forward(passage)

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``work`` on the engine's event loop from a thread (the sync door uses this)."""
        return self._home.submit(work)

    def _semantic_stage(self, config: Config) -> SemanticStage | None:
        """The semantic tier, if ``[cache.semantic]`` turns it on (and the cache is on)."""
        settings = config.cache.semantic
        if not (settings.enabled and config.cache.enabled):
            return None
        if settings.embedder == "upstream" and not self._router.serves(settings.model, "openai"):
            problem = f"{settings.model!r} is not an embeddings model any upstream serves"
            raise ConfigError("cache.semantic.model", problem)
        from .cache.semantic import build_semantic  # numpy and the model only when asked for

        tier = build_semantic(config, self.embed, self._clock, self._wall)
        return SemanticStage(
            tier, self._stage, namespace=config.namespace, metrics=self.metrics, clock=self._clock
        )

    def _key(self, call: Call) -> bytes:
        """The cache and coalescing key: a caller's own namespace keeps its answers apart."""
        return call_key(call, self.config.namespace)

    async def _fetch(self, call: Call, key: bytes, looked: Looked | None = None) -> Result:
        """Send (or batch) a call the cache did not answer; fill the cache with its answer.

        An answer a fallback gave is the caller's, not stored: the key names
        the call's own model, which should answer it again once it is back.
        A call the semantic tier ``looked`` up has its question remembered too.
        """
        batches = self._batches
        result = await (self._batched(call) if batches.takes(call) else self._sender.send(call))
        if (
            result.ok
            and result.model == call.model
            and call.cache != "no-store"
            and self._cache_switch.on
        ):
            answer = StoredAnswer(result.status, result.body, result.upstream, self._wall())
            await self._stage.store(key, answer, self._ttl.seconds, stale=self.config.cache.stale)
            if looked is not None and self._semantic is not None:
                self._semantic.remember(looked, key, self._ttl.seconds)
        return result

    async def _batched(self, call: Call) -> Result:
        """A call through its batch; alone on its fallbacks (if any) when the batch failed."""
        try:
            result = await self._batches.submit(call)
        except (UpstreamUnavailableError, UpstreamProtocolError):
            if not call.fallbacks:
                raise
            return await self._sender.fall_back(call)
        if call.fallbacks and falls_back(result.status):
            return await self._sender.fall_back(call)
        # One answer of the batch sent as the call's model (split answers name none).
        return Result(
            result.status, result.body, result.upstream, queued_s=result.queued_s, model=call.model
        )

    # -- inspection and lifecycle ----------------------------------------------

    def analyse(self) -> Analysis:
        """Where this engine's request time went, and the bottleneck (last 5 minutes)."""
        return analyse(self.metrics, self.stats())

    def save_run(self, path: str | Path = LAST_RUN) -> Path | None:
        """Save this engine's figures for ``overdrive report --file`` and ``overdrive top --file``.

        None if it cannot write.

        >>> od.save_run("runs/nightly.json")  # doctest: +SKIP
        PosixPath('runs/nightly.json')
        """
        from .dashboard import snapshot

        return save_run(self, path, extra={"snapshot": snapshot(self)})

    def optimize(self, **options: Any) -> Optimizer:
        """Start the optimizer loop on this engine (closed with it); see :class:`Optimizer`.

        >>> optimizer = od.optimize(window=10.0, advisory=True)  # doctest: +SKIP
        >>> optimizer.decisions  # doctest: +SKIP
        """
        if self._optimizer is None:
            self._optimizer = Optimizer(self, clock=self._clock, **options)
            self._optimizer.start()
            self._life.optimizer = self._optimizer
        return self._optimizer

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer loop :meth:`optimize` started, if any."""
        return self._optimizer

    @property
    def alerts(self) -> Alerts | None:
        """The ``[alerts]`` rules this engine judges (None without rules); see docs/alerts.md.

        >>> od.alerts.status()  # doctest: +SKIP
        [{'rule': 'chat-slow', 'labels': {'op': 'chat'}, 'state': 'pending', ...}]
        """
        return self._alerts

    def _start_alerts(self) -> None:
        """Evaluate ``[alerts]`` (and export metrics) on the running loop; else at first use there.

        Home moving to a new loop starts them again there (``Lifecycle.forget_loop``).
        """
        if _running_loop() is None:
            return
        if self._alerts is not None:
            self._alerts.start()
        if self._export is not None:
            self._export.start()

    def dashboard(
        self, port: int = 8765, host: str = "127.0.0.1", *, interval: float = 1.0
    ) -> DashboardServer:
        """Serve the live dashboard of this engine at ``http://host:port/dashboard``.

        It runs on the running event loop, or on the engine's own loop thread
        in a sync program, until ``close()`` / ``aclose()`` (no key: keep it on
        loopback). See ``docs/dashboard.md``.

        >>> server = od.dashboard(port=8765)  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'http://127.0.0.1:8765/dashboard'
        """
        from .dashboard import Dashboard, serve_dashboard

        board = Dashboard(interval=interval)
        return serve_dashboard(self, host=host, port=port, submit=self.submit, dashboard=board)

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
        """Every model a call may name: the upstreams' models, then the ``[[models]]`` aliases."""
        served = self._router.models()
        return served + [name for name in self._aliases if name not in served]

    def stats(self) -> dict[str, Any]:
        """A plain-data snapshot: metrics, cost by model, cache, upstream and tool state."""
        cache = self._cache
        metrics = self.metrics.snapshot()
        return {
            "metrics": metrics,
            "cost_usd": sum_by(metrics["counters"], COST, "model"),
            "cost_usd_by_key": sum_by(metrics["counters"], COST, "key"),
            "budgets": self._sender.budgets.status(),
            "cache": cache.summary() if self._cache_switch.on else None,
            "semantic": None if self._semantic is None else self._semantic.tier.summary(),
            "in_flight": {u.name: u.in_flight for u in self._upstreams},
            "waiting": {q.name: q.waiting for u in self._upstreams for q in u.queues().values()},
            "tools": self._tools.stats(),
            "tunables": {name: knob.value for name, knob in self.tunables.items()},
            "balancer": self._router.balancer,
            "health": self._router.health(),
            "resources": self.resources.snapshot(),
            "alerts": [] if self._alerts is None else self._alerts.status(),
        }

    async def aclose(self) -> None:
        """Close the engine: its tasks, pools and connections; and its own loop thread, if any."""
        owned = self._home.owned
        if owned is not None and asyncio.get_running_loop() is not owned:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._life.close(), owned))
            self._home.stop_owned()
            return
        await self._life.close()

    def close(self) -> None:
        """:meth:`aclose` for sync programs (the sync door's); inside a running loop use that."""
        owned = self._home.owned
        running = _running_loop()
        if owned is not None and running is not owned:
            asyncio.run_coroutine_threadsafe(self._life.close(), owned).result()
            self._home.stop_owned()
        elif running is not None:
            raise EngineLoopError("od.close() inside a running event loop: await od.aclose()")
        else:
            asyncio.run(self._life.close())

    async def __aenter__(self) -> Overdrive:
        self._start_alerts()
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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _semantic_result(looked: Looked, model: str) -> Result:
    """A semantic hit as a result: the stored answer, with how similar its question was."""
    return replace(_cached_result(looked.answer, model, "semantic"), similarity=looked.similarity)


def _cached_result(value: Any, model: str = "", source: str = "cache") -> Result:
    """A stored answer as a result; ``model`` is the call's (only its own model's are stored)."""
    if value.__class__ is not StoredAnswer:
        value = StoredAnswer.of(value)  # an entry of an older version: a plain tuple
    body = value.body  # bytes under a complete call's key; ``content()`` only joins chunks
    content = body if body.__class__ is bytes else value.content()
    return Result(value.status, content, value.upstream, source, model=model)
