"""Agent tasks fanned out: od.distribute (local, Ray) against a hand-written asyncio fan-out.

    python benchmarks/bench_distribute.py [--tasks 200] [--concurrency 32] [--cpu-ms 10]

Each task is an agent step: a chat, ``--cpu-ms`` of pure-Python work on the
answer (parsing, scoring: what holds the GIL in a real agent), then a second
chat. The simulated upstream runs in its own process. Contenders, one engine
config each, prompts all distinct so no cache hides the work:

* hand-written: ``asyncio.Semaphore`` + ``gather`` over one engine, what a
  user writes without overdrive.distribute (the floor for the local backend);
* distribute local: the same engine, ``od.distribute(..., backend="local")``;
* distribute ray: two Ray actors, one engine each (timed after a warm-up run
  that starts them; the start-up is printed apart).

With CPU work per task one process is bound by one core; Ray's workers use
both. With ``--cpu-ms 0`` the tasks only wait on the upstream, and the figure
shows what each layer costs. Needs ``overdrive[ray]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _sim_process import SimProcess
from overdrive import Overdrive
from overdrive.distribute import RayBackend, distribute
from overdrive.sim import SimConfig

CHAT = "gpt-4o-mini"


def burn(seconds: float) -> int:
    """Hold the GIL for ``seconds``, as an agent's own Python work does."""
    until = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < until:
        spins += 1
    return spins


def make_agent(cpu_s: float, run_id: str) -> Any:
    async def agent(od: Overdrive, item: int) -> int:
        question = [{"role": "user", "content": f"{run_id}: plan step {item}"}]
        first = await od.chat(model=CHAT, messages=question)
        burn(cpu_s)
        answer = first["choices"][0]["message"]["content"]
        follow_up = [*question, {"role": "assistant", "content": answer}]
        second = await od.chat(model=CHAT, messages=[*follow_up, {"role": "user", "content": "Go"}])
        return len(second["choices"][0]["message"]["content"])

    return agent


async def hand_written(config: dict[str, Any], args: argparse.Namespace) -> float:
    agent = make_agent(args.cpu_ms / 1000, "hand")
    gate = asyncio.Semaphore(args.concurrency)

    async def bounded(od: Overdrive, item: int) -> int:
        async with gate:
            result: int = await agent(od, item)
            return result

    async with Overdrive.from_config(config) as od:
        started = time.perf_counter()
        await asyncio.gather(*(bounded(od, i) for i in range(args.tasks)))
        return time.perf_counter() - started


async def distributed_local(config: dict[str, Any], args: argparse.Namespace) -> float:
    agent = make_agent(args.cpu_ms / 1000, "local")
    async with Overdrive.from_config(config) as od:
        started = time.perf_counter()
        run = distribute(agent, range(args.tasks), engine=od, concurrency=args.concurrency)
        await run.values()
        return time.perf_counter() - started


async def distributed_ray(config: dict[str, Any], args: argparse.Namespace) -> tuple[float, float]:
    """Seconds for the timed run, and for the warm-up that started Ray and the actors."""
    backend = RayBackend(workers=2, init_options={"include_dashboard": False})
    try:
        started = time.perf_counter()
        warm_up = make_agent(0.0, "warm")
        await distribute(warm_up, range(4), backend=backend, config=config).values()
        start_up = time.perf_counter() - started
        agent = make_agent(args.cpu_ms / 1000, "ray")
        started = time.perf_counter()
        run = distribute(
            agent, range(args.tasks), backend=backend, config=config, concurrency=args.concurrency
        )
        await run.values()
        return time.perf_counter() - started, start_up
    finally:
        await backend.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cpu-ms", type=float, default=10.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sim = SimConfig(seed=1, ttft_s=0.05, per_token_s=0.001, jitter=0.0, models=(CHAT,))
    with SimProcess(sim) as upstream:
        config = {"upstreams": [{"name": "sim", "base_url": upstream.base_url, "models": [CHAT]}]}
        hand = asyncio.run(hand_written(config, args))
        local = asyncio.run(distributed_local(config, args))
        ray, start_up = asyncio.run(distributed_ray(config, args))
    print(
        f"{args.tasks} agent tasks, 2 chats + {args.cpu_ms:g} ms CPU each, "
        f"concurrency {args.concurrency}"
    )
    print(f"{'contender':<20}{'seconds':>9}{'tasks/s':>9}{'vs hand':>9}")
    for name, seconds in (
        ("hand-written", hand),
        ("distribute local", local),
        ("distribute ray", ray),
    ):
        print(f"{name:<20}{seconds:>9.2f}{args.tasks / seconds:>9.1f}{hand / seconds:>8.2f}x")
    print(f"(Ray start-up and actor spawn, not timed above: {start_up:.1f} s)")


if __name__ == "__main__":
    main()
