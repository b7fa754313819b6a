"""Run the agent workload against a fresh simulated upstream, plainly or through overdrive."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx2

from ..engine import Overdrive
from ..monitor.names import CACHE_HITS, COALESCED, REQUESTS
from ..sim import SimConfig, SimServer
from ._clients import API_MODELS, Api, ModelClient, model_client
from ._workload import CHAT_MODEL, CLAUDE_MODEL, EMBED_MODEL, AgentTask, Workload

__all__ = ["DEMO_SIM", "PhaseResult", "run_phase"]

T = TypeVar("T")

# A provider tier of 20 requests/s; latencies of a small hosted model.
DEMO_SIM = SimConfig(
    seed=11,
    rpm=1200,
    ttft_s=0.2,
    per_token_s=0.004,
    embed_base_s=0.04,
    models=(CHAT_MODEL, EMBED_MODEL, CLAUDE_MODEL),
)
# USD per token, in the range of small hosted models (input, output).
PRICE_PROMPT = 0.15 / 1e6
PRICE_COMPLETION = 0.60 / 1e6
# What an agent loop does when its client gives up on a 429: wait and try again.
AGENT_BACKOFF_S = 1.0
AGENT_ATTEMPTS = 30


@dataclass(slots=True)
class PhaseResult:
    """What one run of the workload measured."""

    makespan_s: float
    task_seconds: list[float]
    rate_limited: int
    upstream: dict[str, Any]
    cache_hits: int = 0
    coalesced: int = 0
    calls: int = 0

    def summary(self) -> dict[str, Any]:
        tokens = int(
            self.upstream.get("prompt_tokens", 0) + self.upstream.get("completion_tokens", 0)
        )
        return {
            "makespan_s": round(self.makespan_s, 3),
            "upstream_requests": sum(self.upstream.get("requests", {}).values()),
            "upstream_429s": self.upstream.get("rate_limited", 0),
            "rate_limited": self.rate_limited,
            "p50_task_s": round(_percentile(self.task_seconds, 50), 3),
            "p95_task_s": round(_percentile(self.task_seconds, 95), 3),
            "cache_hits": self.cache_hits,
            "coalesced": self.coalesced,
            "cache_hit_ratio": round(self.cache_hits / self.calls, 3) if self.calls else 0.0,
            "served_locally": self.cache_hits + self.coalesced,
            "upstream_tokens": tokens,
            "cost_usd": round(self._cost(), 6),
        }

    def _cost(self) -> float:
        prompt = self.upstream.get("prompt_tokens", 0) * PRICE_PROMPT
        return float(prompt + self.upstream.get("completion_tokens", 0) * PRICE_COMPLETION)


def run_phase(
    workload: Workload,
    *,
    through_overdrive: bool,
    sim_config: SimConfig = DEMO_SIM,
    on_task_done: Callable[[], None] = lambda: None,
    api: Api = "chat",
) -> PhaseResult:
    """Run every task at once on ``api`` against a fresh sim; return the measurements."""
    with SimServer(sim_config) as sim:
        kind = _OverdriveRun if through_overdrive else _PlainRun
        runner = kind(sim.base_url, api, sim_config)
        result = asyncio.run(runner.run(workload, on_task_done))
        result.upstream = sim.stats()
    return result


class _PlainRun:
    """The API's own SDK (openai or anthropic) on its own, with its default retries."""

    def __init__(self, base_url: str, api: Api, sim_config: SimConfig) -> None:
        self.base_url = base_url
        self.api = api
        self.sim_config = sim_config
        self.rate_limited = 0

    async def count_429(self, response: httpx2.Response) -> None:
        if response.status_code == 429:
            self.rate_limited += 1

    def http_client(self) -> httpx2.AsyncClient:
        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
        return httpx2.AsyncClient(limits=limits, event_hooks={"response": [self.count_429]})

    async def run(self, workload: Workload, on_task_done: Callable[[], None]) -> PhaseResult:
        async with self.http_client() as http:
            client = model_client(self.api, self.base_url, http, workload)
            started = time.perf_counter()
            agent = _Agent(client, workload, on_task_done)
            seconds = await asyncio.gather(*(agent.run(task) for task in workload.tasks))
            makespan = time.perf_counter() - started
        return PhaseResult(makespan, list(seconds), self.rate_limited, {})


class _OverdriveRun(_PlainRun):
    """The same SDK client, its HTTP going through the overdrive engine."""

    def __init__(self, base_url: str, api: Api, sim_config: SimConfig) -> None:
        super().__init__(base_url, api, sim_config)
        self.engine = Overdrive.from_config({"upstreams": [self._upstream()]})

    def _upstream(self) -> dict[str, Any]:
        """The sim as the user configures it: its models and the provider's rpm."""
        upstream = {
            "name": "sim",
            "base_url": self.base_url,
            "models": list(API_MODELS[self.api]),
            "rpm": self.sim_config.rpm,
        }
        if self.api == "messages":
            upstream["api"] = "anthropic"
        return upstream

    def http_client(self) -> httpx2.AsyncClient:
        # The same client class as the plain run's, hooks and all: 429s count the same way.
        return self.engine.http_client(event_hooks={"response": [self.count_429]})

    async def run(self, workload: Workload, on_task_done: Callable[[], None]) -> PhaseResult:
        try:
            result = await super().run(workload, on_task_done)
        finally:
            await self.engine.aclose()
        self.engine.save_run()  # for `overdrive report` and `top --file`, in a later process
        metrics = self.engine.metrics
        result.cache_hits = int(metrics.value(CACHE_HITS))
        result.coalesced = int(metrics.value(COALESCED))
        result.calls = int(metrics.value(REQUESTS))
        return result


class _Agent:
    """A minimal agent loop: plan, look things up in parallel, answer."""

    def __init__(
        self, client: ModelClient, workload: Workload, on_task_done: Callable[[], None]
    ) -> None:
        self.client = client
        self.workload = workload
        self.on_task_done = on_task_done

    async def run(self, task: AgentTask) -> float:
        started = time.perf_counter()
        plan = await self.persist(lambda: self.client.complete(self.workload.plan_messages(task)))
        await asyncio.gather(
            *(self.persist(partial(self.client.lookup, query)) for query in task.lookups)
        )
        answer = self.workload.answer_messages(task, plan)
        await self.persist(lambda: self.client.complete(answer))
        self.on_task_done()
        return time.perf_counter() - started

    async def persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry a call the SDK gave up on because of 429s, as agent loops do."""
        for _ in range(AGENT_ATTEMPTS - 1):
            try:
                return await call()
            except self.client.rate_limit_error:
                await asyncio.sleep(AGENT_BACKOFF_S)
        return await call()


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
