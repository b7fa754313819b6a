"""The optimizer loop from a misconfigured start vs a hand-tuned configuration.

    python benchmarks/bench_optimizer.py [--minutes 2] [--window 10] [--workers 64]

The simulated upstream has realistic latency (50 ms to the first token, 3 ms
per token, answers of up to 32 tokens, jitter) and a hidden capacity of 16
chat completions at full speed (past it every call slows, total throughput
falls). A closed loop of ``--workers`` agents, each thinking 20 ms between
calls: half ask chat questions, half of them from a hot set of 200 (so answers
repeat and a cache pays) and half new; half embed new single texts (so
batching pays).

Contenders, each on a fresh engine (real time):

* hand-tuned: cache on, batching on, concurrency 16 (the capacity);
* optimizer: batching off, concurrency 1, cache off, the optimizer loop on
  (window ``--window`` s) for ``--minutes``;
* advisory: the same misconfigured start, the loop in advisory mode.

Reports each one's throughput over its last window, the optimizer's as a
ratio of hand-tuned's (acceptance: >= 0.8 within 2 minutes), the decision log,
and that the advisory run changed no tunable.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time
from typing import Any

from overdrive import Overdrive
from overdrive.optimize._loop import Optimizer
from overdrive.sim import SimConfig, SimServer

CHAT, EMBED = "gpt-4o-mini", "text-embedding-3-small"
GOAL = 0.8
THINK_S = 0.02
HOT_QUESTIONS = 200


def _question(rng: random.Random, worker: int, n: int) -> list[dict[str, str]]:
    """Half the questions come from a small hot set (a cache pays), half are new."""
    hot = rng.random() < 0.5
    text = f"question {rng.randrange(HOT_QUESTIONS)}" if hot else f"question {worker}-{n}"
    return [{"role": "user", "content": text}]


def config(base_url: str, *, tuned: bool) -> dict[str, Any]:
    return {
        "upstreams": [
            {
                "name": "sim",
                "base_url": base_url,
                "models": [CHAT, EMBED],
                # Misconfigured runs are set to 1 through the tunable (see optimized()).
                "concurrency": 16 if tuned else 1,
                "max_concurrency": 64,
            }
        ],
        "batching": {"embeddings": {"enabled": tuned, "max_batch": 64, "max_wait_ms": 5}},
        "cache": {"enabled": tuned},
    }


class Load:
    """A closed loop of agents; counts completed calls."""

    def __init__(self, od: Overdrive, workers: int) -> None:
        self.od, self.done = od, 0
        self.tasks = [asyncio.ensure_future(self._agent(w)) for w in range(workers)]

    async def _agent(self, worker: int) -> None:
        rng = random.Random(worker)
        for n in itertools.count():
            await asyncio.sleep(THINK_S)  # the agent's own work between calls
            try:
                if worker % 2:
                    await self.od.embed(f"doc {worker}-{n}", model=EMBED)
                else:
                    await self.od.chat(
                        model=CHAT, messages=_question(rng, worker, n), max_tokens=32
                    )
            except Exception:  # a failed call counts as not done
                continue
            self.done += 1

    async def rate_over(self, seconds: float) -> float:
        start = self.done
        await asyncio.sleep(seconds)
        return (self.done - start) / seconds

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def hand_tuned(base_url: str, args: argparse.Namespace) -> float:
    async with Overdrive.from_config(config(base_url, tuned=True)) as od:
        load = Load(od, args.workers)
        await asyncio.sleep(args.window)  # warm up
        rate = await load.rate_over(args.window)
        await load.aclose()
    return rate


async def optimized(
    base_url: str, args: argparse.Namespace, *, advisory: bool
) -> tuple[float, Optimizer, dict[str, float], dict[str, float]]:
    async with Overdrive.from_config(config(base_url, tuned=False)) as od:
        before = {name: knob.value for name, knob in od.tunables.items()}
        optimizer = od.optimize(window=args.window, advisory=advisory)
        load = Load(od, args.workers)
        seconds = (args.minutes * 60 if not advisory else 3 * args.window) - args.window
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            await asyncio.sleep(args.window)
            print(f"  t={time.monotonic() - started:5.0f}s {load.done} calls done", flush=True)
        rate = await load.rate_over(args.window)
        after = {name: knob.value for name, knob in od.tunables.items()}
        await load.aclose()
    return rate, optimizer, before, after


async def main(args: argparse.Namespace) -> None:
    sim = SimConfig(ttft_s=0.05, per_token_s=0.003, capacity=16, seed=1)
    with SimServer(sim) as server:
        base_url = server.base_url
        tuned = await hand_tuned(base_url, args)
        print(f"hand-tuned: {tuned:.1f} calls/s over the last {args.window:g}s", flush=True)
        rate, optimizer, start, end = await optimized(base_url, args, advisory=False)
        ratio = rate / tuned if tuned else 0.0
        verdict = "PASS" if ratio >= GOAL else "FAIL"
        print(f"optimizer after {args.minutes:g} min: {rate:.1f} calls/s = {ratio:.2f}x hand-tuned"
              f" (goal >= {GOAL}) {verdict}")  # fmt: skip
        print("decision log:")
        for decision in optimizer.decisions:
            print(f"  t={decision.at - optimizer.decisions[0].at:5.0f}s {decision}")
        changed = {k: (start[k], end[k]) for k in start if start[k] != end[k]}
        print(f"tunables changed: {changed}")
        _, advisor, start, end = await optimized(base_url, args, advisory=True)
        print(f"advisory: {len(advisor.decisions)} recommendations, tunables unchanged: "
              f"{start == end}")  # fmt: skip
        for decision in advisor.decisions:
            print(f"  {decision}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
