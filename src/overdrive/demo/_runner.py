"""Run the agent workload against a fresh simulated upstream, plainly or through overdrive."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import openai

from ..engine import Overdrive
from ..monitor.names import CACHE_HITS, COALESCED, REQUESTS
from ..optimize import save_run
from ..sim import SimConfig, SimServer
from ._workload import CHAT_MODEL, EMBED_MODEL, AgentTask, Workload

__all__ = ["DEMO_SIM", "PhaseResult", "run_phase"]

T = TypeVar("T")

# A provider tier of 20 requests/s; latencies of a small hosted model.
DEMO_SIM = SimConfig(
    seed=11,
    rpm=1200,
    ttft_s=0.2,
    per_token_s=0.004,
    embed_base_s=0.04,
    models=(CHAT_MODEL, EMBED_MODEL),
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
) -> PhaseResult:
    """Run every task at once against a fresh sim; return the measurements."""
    with SimServer(sim_config) as sim:
        runner = _OverdriveRun(sim.base_url) if through_overdrive else _PlainRun(sim.base_url)
        result = asyncio.run(runner.run(workload, on_task_done))
        result.upstream = sim.stats()
    return result


class _PlainRun:
    """The openai client on its own, with its default retries."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.rate_limited = 0

    async def count_429(self, response: httpx.Response) -> None:
        if response.status_code == 429:
            self.rate_limited += 1

    def http_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        return httpx.AsyncClient(limits=limits, event_hooks={"response": [self.count_429]})

    async def run(self, workload: Workload, on_task_done: Callable[[], None]) -> PhaseResult:
        async with self.http_client() as http:
            # openai 3 annotates httpx2 clients but accepts httpx ones at run time.
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key="demo",
                http_client=http,  # type: ignore[arg-type]
            )
            started = time.perf_counter()
            agent = _Agent(client, workload, on_task_done)
            seconds = await asyncio.gather(*(agent.run(task) for task in workload.tasks))
            makespan = time.perf_counter() - started
        return PhaseResult(makespan, list(seconds), self.rate_limited, {})


class _OverdriveRun(_PlainRun):
    """The same openai client, its HTTP going through the overdrive engine."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.engine = Overdrive.from_config(
            {
                "upstreams": [
                    {
                        "name": "sim",
                        "base_url": base_url,
                        "models": [CHAT_MODEL, EMBED_MODEL],
                        "rpm": DEMO_SIM.rpm,
                    }
                ]
            }
        )

    def http_client(self) -> httpx.AsyncClient:
        # The httpx flavour: the same client class as the plain run's, hooks and all.
        hooks = {"response": [self.count_429]}
        return self.engine.http_client(flavour="httpx", event_hooks=hooks)

    async def run(self, workload: Workload, on_task_done: Callable[[], None]) -> PhaseResult:
        try:
            result = await super().run(workload, on_task_done)
        finally:
            await self.engine.aclose()
        save_run(self.engine)  # for `overdrive report`, in a later process
        metrics = self.engine.metrics
        result.cache_hits = int(metrics.value(CACHE_HITS))
        result.coalesced = int(metrics.value(COALESCED))
        result.calls = int(metrics.value(REQUESTS))
        return result


class _Agent:
    """A minimal agent loop: plan, look things up in parallel, answer."""

    def __init__(
        self, client: openai.AsyncOpenAI, workload: Workload, on_task_done: Callable[[], None]
    ) -> None:
        self.client = client
        self.workload = workload
        self.on_task_done = on_task_done

    async def run(self, task: AgentTask) -> float:
        started = time.perf_counter()
        plan = await self.chat(self.workload.plan_messages(task))
        await asyncio.gather(*(self.lookup(query) for query in task.lookups))
        await self.chat(self.workload.answer_messages(task, plan))
        self.on_task_done()
        return time.perf_counter() - started

    async def chat(self, messages: Any) -> str:
        completion = await _persist(
            lambda: self.client.chat.completions.create(
                model=CHAT_MODEL,
                messages=messages,
                max_tokens=self.workload.max_tokens,
            )
        )
        return completion.choices[0].message.content or ""

    async def lookup(self, query: str) -> None:
        await _persist(lambda: self.client.embeddings.create(model=EMBED_MODEL, input=query))


async def _persist(call: Callable[[], Awaitable[T]]) -> T:
    """Retry a call the client gave up on because of 429s, as agent loops do."""
    for _ in range(AGENT_ATTEMPTS - 1):
        try:
            return await call()
        except openai.RateLimitError:
            await asyncio.sleep(AGENT_BACKOFF_S)
    return await call()


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
