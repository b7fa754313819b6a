"""Prefix-aware routing: multi-turn agents over four deployments that cache prompt prefixes.

    python benchmarks/bench_prefix_routing.py [--agents 16] [--turns 12] [--repeats 3]

Four simulated deployments serve one model, each a ``SimServer`` in a child
process of its own with an automatic prompt prefix cache, as providers and
inference servers keep per machine: prefixes of 1,024 tokens and more, in
128-token blocks, 400k tokens per deployment (least recently used forgotten
first). A prompt token not found in the cache costs 0.2 ms of prefill before
the first token, and a deployment reads one prompt at a time (5,000 tokens a
second, shared, as an inference server's prefill compute is): uncached work
delays every caller behind it. A cached token costs nothing.

``--agents`` agents run at once, each a conversation of ``--turns`` turns (an
agent loop's model calls): a long system prompt every agent shares (about
3,800 tokens), then per turn a user message of about 290 tokens (a task, a
tool result) and the model's answer (64 tokens), so the history grows every
turn. Every call streams through ``od.http_client()`` with the real ``openai``
SDK; time to first token is the time to the first content chunk, and the
usage chunk tells the cached tokens.

Contenders, each on fresh deployments (empty caches) and a fresh engine:

* ``p2c``: the default peak-EWMA balancer with prefix affinity off;
* ``round_robin``: in turn, affinity off;
* ``affinity``: the defaults (prefix affinity on);
* ``oracle``: each conversation pinned to one deployment, conversations dealt
  out evenly: what a router that knew every cache would do here (sent
  straight to the deployments, no engine in the way).

Reported: TTFT p50 / p95, cached share of prompt tokens, cost at list prices
(input $2.00, cached input $0.50, output $8.00 per million tokens), and the
busiest deployment's calls over the mean; medians over ``--repeats``.
Acceptance: TTFT p50 of p2c >= 2x affinity's, affinity's cached share >= 0.9
of the oracle's, and no deployment above 1.5x the mean load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sim_process import SimProcess
from overdrive import Overdrive
from overdrive.sim import SimConfig

MODEL = "gpt-sim"
DEPLOYMENTS = 4
CONTENDERS = ("p2c", "round_robin", "affinity", "oracle")
SYSTEM_WORDS = 2000
TURN_WORDS = 150
MAX_TOKENS = 64
PRICE_PER_MILLION = {"input": 2.00, "cached": 0.50, "output": 8.00}
MIN_P2C_OVER_AFFINITY = 2.0
MIN_SHARE_OF_ORACLE = 0.9
MAX_LOAD_OVER_MEAN = 1.5

_WORDS = [
    "plan",
    "check",
    "read",
    "write",
    "call",
    "tool",
    "result",
    "value",
    "error",
    "retry",
    "cache",
    "agent",
    "step",
]


def sim_config(seed: int) -> SimConfig:
    return SimConfig(
        seed=seed,
        ttft_s=0.05,
        per_token_s=0.002,
        models=(MODEL,),
        prefix_cache_tokens=400_000,
        prefill_per_token_s=0.0002,
        prefill_shared=True,
    )


def words(count: int, salt: int) -> str:
    return " ".join(_WORDS[(salt * 7 + n * 3) % len(_WORDS)] + str(n % 97) for n in range(count))


SYSTEM = {"role": "system", "content": "You are an agent. " + words(SYSTEM_WORDS, 0)}


class Tally:
    """What one contender's calls saw."""

    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.prompt = self.cached = self.output = 0
        self.by_deployment: Counter[str] = Counter()

    def cost(self) -> float:
        fresh = self.prompt - self.cached
        prices = PRICE_PER_MILLION
        dollars = fresh * prices["input"] + self.cached * prices["cached"]
        return (dollars + self.output * prices["output"]) / 1e6


async def turn(client: openai.AsyncOpenAI, messages: list[Any], tally: Tally) -> str:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tally.prompt += chunk.usage.prompt_tokens
            tally.output += chunk.usage.completion_tokens
            details = chunk.usage.prompt_tokens_details
            tally.cached += (details.cached_tokens or 0) if details is not None else 0
    tally.ttft.append(first if first is not None else time.perf_counter() - started)
    return "".join(parts)


async def agent(client: openai.AsyncOpenAI, index: int, turns: int, tally: Tally) -> None:
    messages: list[Any] = [SYSTEM]
    for step in range(turns):
        task = f"Agent {index}, step {step}: " + words(TURN_WORDS, index * 31 + step)
        messages.append({"role": "user", "content": task})
        answer = await turn(client, messages, tally)
        messages.append({"role": "assistant", "content": answer})


async def through_engine(urls: list[str], name: str, agents: int, turns: int) -> Tally:
    routing: dict[str, Any] = {"cold_start": "off"}  # every call one attempt: only routing differs
    if name == "p2c":
        routing["affinity"] = {"mode": "off"}
    elif name == "round_robin":
        routing |= {"balancer": "round_robin", "affinity": {"mode": "off"}}
    upstreams = [
        {"name": f"d{n}", "base_url": url, "models": [MODEL], "concurrency": 512}
        for n, url in enumerate(urls)
    ]
    config = {"upstreams": upstreams, "cache": {"enabled": False}, "routing": routing}
    tally = Tally()
    async with Overdrive.from_config(config) as od:
        client = openai.AsyncOpenAI(
            base_url="http://overdrive/v1", api_key="x", http_client=od.http_client()
        )
        await asyncio.gather(*(agent(client, n, turns, tally) for n in range(agents)))
        for n in range(len(urls)):
            tally.by_deployment[f"d{n}"] = int(
                od.metrics.value("overdrive_upstream_requests_total", upstream=f"d{n}")
            )
    return tally


async def pinned(urls: list[str], agents: int, turns: int) -> Tally:
    tally = Tally()
    clients = [openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) for url in urls]

    async def pinned_agent(index: int) -> None:
        home = index % len(urls)
        await agent(clients[home], index, turns, tally)
        tally.by_deployment[f"d{home}"] += turns

    await asyncio.gather(*(pinned_agent(n) for n in range(agents)))
    for client in clients:
        await client.close()
    return tally


def figures(tally: Tally) -> dict[str, float]:
    ordered = sorted(tally.ttft)
    loads = list(tally.by_deployment.values())
    return {
        "ttft_p50": statistics.median(ordered),
        "ttft_p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "cached_share": tally.cached / tally.prompt if tally.prompt else 0.0,
        "cost": tally.cost(),
        "load_over_mean": max(loads) / statistics.mean(loads) if loads else 0.0,
    }


def run_contender(name: str, agents: int, turns: int, seed: int) -> dict[str, float]:
    with ExitStack() as stack:
        sims = [
            stack.enter_context(SimProcess(sim_config(seed * 10 + n))) for n in range(DEPLOYMENTS)
        ]
        urls = [sim.base_url for sim in sims]
        if name == "oracle":
            tally = uvloop.run(pinned(urls, agents, turns))
        else:
            tally = uvloop.run(through_engine(urls, name, agents, turns))
    return figures(tally)


def measure(agents: int, turns: int, repeats: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for repeat in range(repeats):
        for name in CONTENDERS:
            runs[name].append(run_contender(name, agents, turns, repeat))
    return {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }


def report(table: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'contender':<12}{'TTFT p50':>10}{'TTFT p95':>10}{'cached':>8}{'cost $':>9}"
        f"{'max/mean load':>15}"
    ]
    for name, row in table.items():
        lines.append(
            f"{name:<12}{row['ttft_p50']:>10.3f}{row['ttft_p95']:>10.3f}"
            f"{row['cached_share']:>8.2f}{row['cost']:>9.3f}{row['load_over_mean']:>15.2f}"
        )
    affinity, p2c, oracle = table["affinity"], table["p2c"], table["oracle"]
    speedup = p2c["ttft_p50"] / affinity["ttft_p50"]
    share = affinity["cached_share"] / oracle["cached_share"] if oracle["cached_share"] else 0.0
    checks = [
        (f"TTFT p50 p2c / affinity = {speedup:.2f}x", speedup >= MIN_P2C_OVER_AFFINITY, ">= 2x"),
        (f"cached share affinity / oracle = {share:.2f}", share >= MIN_SHARE_OF_ORACLE, ">= 0.9"),
        (
            f"busiest deployment / mean (affinity) = {affinity['load_over_mean']:.2f}",
            affinity["load_over_mean"] <= MAX_LOAD_OVER_MEAN,
            "<= 1.5",
        ),
    ]
    for text, ok, goal in checks:
        lines.append(f"{text} (goal {goal}): {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(report(measure(args.agents, args.turns, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
