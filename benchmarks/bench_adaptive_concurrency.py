"""Adaptive concurrency on a hidden capacity: ``"auto"`` vs a sweep of fixed limits.

    python benchmarks/bench_adaptive_concurrency.py [--seconds 7] [--warmup 3] [--repeats 2]

The simulated upstream serves chat completions on an accelerator of hidden
capacity (``SimConfig.capacity``, default 24): up to that many calls generate
at full speed; past it every call slows by ``(n / capacity) ** 1.5``, so
throughput falls past the knee. Latency is realistic and varies per call: 50 ms
to the first token plus 3 ms per output token, ``max_tokens`` drawn from 8..64
for each call (answers of 8..63 tokens, 70..240 ms alone), with the sim's
jitter. No rate limit; the engine's cache is off and every prompt is distinct,
so every call reaches the upstream.

A closed loop of ``--workers`` agents (default 128, far more than the capacity)
calls ``od.chat`` back to back through a fresh engine per contender: each fixed
limit of the sweep, then ``"auto"``, which must find the knee: it starts open
(the first 128 calls all go out at once, as a cold burst would), measures a
baseline at 16 once that load lasts, and climbs from there. Each contender
runs ``--warmup`` seconds, then is measured for ``--seconds``: throughput
(calls/s), latency as the agent sees it (queueing in the engine included) and
upstream latency (timed inside the sim, in its own process). Every contender
runs ``--repeats`` times, interleaved; the table shows medians.

Acceptance: auto's throughput >= 0.9x the best fixed limit's, and its p95
latency <= 1.2x that limit's (checked on both latencies).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import uvloop

from _sim_process import ChildServer
from overdrive import Overdrive
from overdrive._asgi import Receive, Scope, Send
from overdrive.sim import SimApp, SimConfig, SimServer

MODEL = "gpt-4o-mini"
SWEEP = (4, 8, 12, 16, 20, 24, 28, 32, 48, 64, 128)
MIN_THROUGHPUT_RATIO = 0.9
MAX_P95_RATIO = 1.2
# How often the auto limit is read while a contender runs.
LIMIT_SAMPLE_S = 0.25


# --- the simulated upstream, in a process of its own --------------------------------------


class TimedSimApp(SimApp):
    """The sim, timing each chat completion from request to last byte."""

    __slots__ = ("samples",)

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.samples: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        await super().__call__(scope, receive, send)
        self.samples.append(time.perf_counter() - started)

    def take(self) -> list[float]:
        """The latencies timed since the last call (a swap, safe from another thread)."""
        taken, self.samples = self.samples, []
        return taken


class SimProcess(ChildServer):
    """A SimServer with a hidden capacity, in a child process so the engine's CPU use
    does not slow it; ``take()`` fetches the upstream latencies timed since the last take.
    """

    def __init__(self, config: SimConfig) -> None:
        super().__init__(_serve_sim, config)

    @property
    def base_url(self) -> str:
        return str(self.address)

    def take(self) -> tuple[list[float], int]:
        """Upstream latencies since the last take, and the most calls it held at once."""
        taken: tuple[list[float], int] = self.ask("take")
        return taken


def _serve_sim(config: SimConfig, pipe: Connection) -> None:
    sim = SimServer(config)
    app = sim.app = TimedSimApp(config)
    with sim:
        pipe.send(sim.base_url)
        while pipe.recv() == "take":
            stats = sim.stats()
            sim.reset()  # max_in_flight restarts from the calls in flight now
            pipe.send((app.take(), stats["max_in_flight"]))


# --- one contender ------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One contender's measured window."""

    limit: int | str
    calls: list[float]  # latency of each call that ended in the window, as the agent saw it
    upstream: list[float]  # latency of each call the sim finished in the window
    seconds: float
    errors: int
    max_in_flight: int
    limits: list[int] = field(default_factory=list)  # auto only: the limit, sampled

    @property
    def throughput(self) -> float:
        return len(self.calls) / self.seconds


class Load:
    """``workers`` agents calling back to back; each call's end and latency is kept."""

    def __init__(self, od: Overdrive, workers: int, seed: int) -> None:
        self._od = od
        self._rng = random.Random(seed)
        self._ids = itertools.count()
        self._workers = workers
        self.done: list[tuple[float, float]] = []
        self.errors = 0

    async def run_until(self, deadline: float) -> None:
        tasks = [asyncio.create_task(self._agent(deadline)) for _ in range(self._workers)]
        await asyncio.gather(*tasks)

    async def _agent(self, deadline: float) -> None:
        while time.perf_counter() < deadline:
            number = next(self._ids)  # distinct prompts: nothing to cache or coalesce
            question = f"Agent question {number}: what should the next step be?"
            started = time.perf_counter()
            try:
                await self._od.chat(
                    model=MODEL,
                    messages=[{"role": "user", "content": question}],
                    max_tokens=self._rng.randint(8, 64),
                )
            except Exception:
                self.errors += 1
                continue
            ended = time.perf_counter()
            self.done.append((ended, ended - started))


async def run_one(sim: SimProcess, limit: int | str, args: argparse.Namespace, seed: int) -> Run:
    upstream = {
        "name": "sim",
        "base_url": sim.base_url,
        "models": [MODEL],
        "concurrency": limit,
        "timeout": 30,
    }
    config = {"upstreams": [upstream], "cache": {"enabled": False}}
    async with Overdrive.from_config(config) as od:
        concurrency = od.upstreams()[0].concurrency
        load = Load(od, args.workers, seed)
        start = time.perf_counter()
        measure_from = start + args.warmup
        end = measure_from + args.seconds
        running = asyncio.create_task(load.run_until(end))
        limits: list[int] = []
        marked = False
        while not running.done():
            now = time.perf_counter()
            if not marked and now >= measure_from:
                await asyncio.to_thread(sim.take)  # drop the warm-up's upstream samples
                marked = True
            if marked:
                limits.append(concurrency.limit)
            await asyncio.sleep(LIMIT_SAMPLE_S)
        await running
        upstream_latencies, max_in_flight = await asyncio.to_thread(sim.take)
    calls = [latency for ended, latency in load.done if measure_from <= ended < end]
    return Run(
        limit,
        calls,
        upstream_latencies,
        args.seconds,
        load.errors,
        max_in_flight,
        limits if limit == "auto" else [],
    )


# --- the report ---------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(slots=True)
class Row:
    """Medians over a contender's repeats."""

    limit: int | str
    throughput: float
    p50: float
    p95: float
    upstream_p50: float
    upstream_p95: float
    errors: int
    max_in_flight: int
    limits: list[int]

    @classmethod
    def of(cls, runs: list[Run]) -> Row:
        def median(values: list[float]) -> float:
            return statistics.median(values)

        return cls(
            runs[0].limit,
            median([r.throughput for r in runs]),
            median([quantile(r.calls, 0.5) for r in runs]),
            median([quantile(r.calls, 0.95) for r in runs]),
            median([quantile(r.upstream, 0.5) for r in runs]),
            median([quantile(r.upstream, 0.95) for r in runs]),
            sum(r.errors for r in runs),
            max(r.max_in_flight for r in runs),
            [limit for r in runs for limit in r.limits],
        )


def print_table(rows: list[Row], best: Row, repeats: int) -> None:
    print(f"\nmedians of {repeats} run(s) each")
    print(
        f"{'limit':>6} {'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'upstream p50':>13} {'upstream p95':>13} {'max in flight':>14} {'errors':>7}"
    )
    for row in rows:
        mark = "  <- best fixed" if row is best else ""
        print(
            f"{row.limit!s:>6} {row.throughput:>8.1f} {row.p50 * 1e3:>7.0f} {row.p95 * 1e3:>7.0f} "
            f"{row.upstream_p50 * 1e3:>13.0f} {row.upstream_p95 * 1e3:>13.0f} "
            f"{row.max_in_flight:>14} {row.errors:>7}{mark}"
        )


def print_auto(runs: list[Run]) -> None:
    print("\nauto's limit over each measured window (one sample per second):")
    per_second = round(1.0 / LIMIT_SAMPLE_S)
    for i, run in enumerate(runs, 1):
        print(f"  run {i}: {run.limits[::per_second]}")
    limits = [limit for run in runs for limit in run.limits]
    if limits:
        print(
            f"  settled: median {statistics.median(limits):g}, "
            f"10th..90th percentile {quantile([float(x) for x in limits], 0.1):g}.."
            f"{quantile([float(x) for x in limits], 0.9):g}"
        )


def print_verdict(auto: Row, best: Row) -> bool:
    throughput = auto.throughput / best.throughput
    p95 = auto.p95 / best.p95
    upstream_p95 = auto.upstream_p95 / best.upstream_p95
    checks = [
        (
            f"throughput {throughput:.3f}x best fixed ({best.limit})",
            throughput >= MIN_THROUGHPUT_RATIO,
        ),
        (f"p95 latency (agent) {p95:.3f}x best fixed's", p95 <= MAX_P95_RATIO),
        (f"p95 latency (upstream) {upstream_p95:.3f}x best fixed's", upstream_p95 <= MAX_P95_RATIO),
    ]
    print("\nauto vs the best fixed limit:")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


# --- main ---------------------------------------------------------------------------------


async def sweep(sim: SimProcess, args: argparse.Namespace) -> dict[int | str, list[Run]]:
    contenders: list[int | str] = [*args.limits, "auto"]
    runs: dict[int | str, list[Run]] = {c: [] for c in contenders}
    for repeat in range(args.repeats):
        for limit in contenders:
            run = await run_one(sim, limit, args, seed=repeat)
            runs[limit].append(run)
            print(
                f"run {repeat + 1} limit {limit!s:>4}: {run.throughput:6.1f} calls/s, "
                f"p95 {quantile(run.calls, 0.95) * 1e3:5.0f} ms, "
                f"upstream p95 {quantile(run.upstream, 0.95) * 1e3:4.0f} ms",
                flush=True,
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=7.0, help="measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured, before each run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per contender")
    parser.add_argument("--workers", type=int, default=128, help="agents calling back to back")
    parser.add_argument("--capacity", type=int, default=24, help="the sim's hidden capacity")
    parser.add_argument(
        "--limits", type=int, nargs="+", default=list(SWEEP), help="fixed limits to sweep"
    )
    args = parser.parse_args()
    config = SimConfig(
        seed=7, ttft_s=0.05, per_token_s=0.003, capacity=args.capacity, models=(MODEL,)
    )
    total = (args.seconds + args.warmup) * (len(args.limits) + 1) * args.repeats
    print(
        f"hidden capacity {args.capacity}, {args.workers} agents, {len(args.limits)} fixed "
        f"limits + auto, {args.repeats} run(s) each of {args.warmup:g}+{args.seconds:g} s "
        f"(about {total / 60:.1f} min)"
    )
    with SimProcess(config) as sim:
        runs = uvloop.run(sweep(sim, args))
    rows = [Row.of(runs[c]) for c in runs]
    fixed = [row for row in rows if row.limit != "auto"]
    best = max(fixed, key=lambda row: row.throughput)
    auto = next(row for row in rows if row.limit == "auto")
    print_table(rows, best, args.repeats)
    print_auto(runs["auto"])
    ok = print_verdict(auto, best)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
