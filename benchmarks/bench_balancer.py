"""Load balancing with one deployment turning slow: peak-EWMA vs round robin, least load, oracle.

    python benchmarks/bench_balancer.py [--agents 32] [--warmup 3] [--window 6] [--after 3]
                                        [--repeats 3]

Four simulated deployments serve the same model, each its own ``SimServer``
(all four in one child process, so the engine's CPU use does not slow them).
Latency is realistic and varies per call: 50 ms to the first token plus
0.8 ms per output token, answers of 16..63 tokens (63..100 ms alone), with the
sim's lognormal jitter. No rate limits; the engine's cache is off and every
prompt is distinct, so every call reaches a deployment; each upstream's
concurrency is fixed at the number of agents, so only the balancer decides.

A closed loop of ``--agents`` agents calls ``od.chat`` back to back through a
fresh engine per contender. After ``--warmup`` seconds deployment ``d0`` turns
slow (the sim's ``slow_factor``, about 2 s added to every call it starts) for
``--window`` seconds, then runs ``--after`` seconds healthy again. Every call
started after the warm-up is measured, as the agent sees it. Contenders, in
the same run: ``peak_ewma`` (the default), ``round_robin``, ``least_load``,
and ``oracle``: the default balancer on an engine without ``d0``, i.e. one that
never picks the slow deployment. A last phase runs the default with all four
healthy and reports each deployment's share of calls. Every contender runs
``--repeats`` times, interleaved; figures are medians.

Acceptance: p99(peak_ewma) <= 1.3x p99(oracle), p99(round_robin) >= 3x
p99(peak_ewma), and with all healthy each share within +-10% of 25%.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import uvloop

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer

MODEL = "gpt-sim"
DEPLOYMENTS = 4
TTFT_S = 0.05
PER_TOKEN_S = 0.0008
# The mean healthy call is 50 + 0.8 x 39.5 = 82 ms; x25 is about 2.05 s: 2 s added.
SLOW_FACTOR = 25.0
CONTENDERS = ("peak_ewma", "round_robin", "least_load", "oracle")
MAX_DEFAULT_VS_ORACLE = 1.3
MIN_ROUND_ROBIN_VS_DEFAULT = 3.0
SHARE_TOLERANCE = 0.10


# --- four simulated deployments, in a process of their own --------------------------------


class Sims:
    """``DEPLOYMENTS`` SimServers in a child process; :meth:`slow` sets one's slow factor."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve_sims, args=(child,), daemon=True)
        self.base_urls: list[str] = []

    def __enter__(self) -> Sims:
        self._process.start()
        self.base_urls = self._pipe.recv()
        return self

    def slow(self, index: int, factor: float) -> None:
        self._pipe.send(("slow", index, factor))
        self._pipe.recv()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pipe.send(("stop", 0, 0.0))
        self._process.join(10)


def _serve_sims(pipe: Connection) -> None:
    sims = [
        SimServer(SimConfig(seed=i, ttft_s=TTFT_S, per_token_s=PER_TOKEN_S, models=(MODEL,)))
        for i in range(DEPLOYMENTS)
    ]
    for sim in sims:
        sim.start()
    try:
        pipe.send([sim.base_url for sim in sims])
        while True:
            command, index, factor = pipe.recv()
            if command != "slow":
                break
            sims[index].set_faults(slow_factor=factor)
            pipe.send(True)
    finally:
        for sim in sims:
            sim.stop()


# --- one contender ------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One contender's measured calls."""

    name: str
    latencies: list[float]  # every call started after the warm-up, as the agent saw it
    seconds: float
    errors: int
    slow_calls: int  # calls sent to d0 while it was slow (the oracle never sends any)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds


class Load:
    """``agents`` agents calling back to back with distinct prompts."""

    def __init__(self, od: Overdrive, agents: int) -> None:
        self._od = od
        self._agents = agents
        self._ids = itertools.count()
        self.calls: list[tuple[float, float]] = []  # (started, latency)
        self.errors = 0

    async def run_until(self, deadline: float) -> None:
        await asyncio.gather(*(self._agent(deadline) for _ in range(self._agents)))

    async def _agent(self, deadline: float) -> None:
        while time.perf_counter() < deadline:
            question = f"Agent question {next(self._ids)}: what should the next step be?"
            started = time.perf_counter()
            try:
                await self._od.chat(model=MODEL, messages=[{"role": "user", "content": question}])
            except Exception:
                self.errors += 1
                continue
            self.calls.append((started, time.perf_counter() - started))


def engine_config(base_urls: list[str], balancer: str, agents: int) -> dict[str, Any]:
    upstreams = [
        {"name": f"d{i}", "base_url": url, "models": [MODEL], "concurrency": agents}
        for i, url in enumerate(base_urls)
    ]
    if balancer == "oracle":  # never picks the deployment that turns slow
        upstreams, balancer = upstreams[1:], "peak_ewma"
    return {
        "upstreams": upstreams,
        "cache": {"enabled": False},
        "routing": {"balancer": balancer},
    }


def sent_to(od: Overdrive, name: str) -> float:
    return od.metrics.value("overdrive_upstream_requests_total", upstream=name)


async def run_contender(sims: Sims, name: str, args: argparse.Namespace) -> Run:
    async with Overdrive.from_config(engine_config(sims.base_urls, name, args.agents)) as od:
        load = Load(od, args.agents)
        start = time.perf_counter()
        measure_from = start + args.warmup
        end = measure_from + args.window + args.after
        running = asyncio.create_task(load.run_until(end))
        await asyncio.sleep(args.warmup)
        before = sent_to(od, "d0")
        await asyncio.to_thread(sims.slow, 0, SLOW_FACTOR)
        await asyncio.sleep(args.window)
        await asyncio.to_thread(sims.slow, 0, 1.0)
        slow_calls = int(sent_to(od, "d0") - before)
        await running
    latencies = [latency for started, latency in load.calls if started >= measure_from]
    return Run(name, latencies, end - measure_from, load.errors, slow_calls)


async def healthy_shares(sims: Sims, args: argparse.Namespace) -> dict[str, float]:
    """Each deployment's share of calls under the default balancer, all healthy."""
    async with Overdrive.from_config(engine_config(sims.base_urls, "peak_ewma", args.agents)) as od:
        load = Load(od, args.agents)
        await load.run_until(time.perf_counter() + args.share_seconds)
        sent = {f"d{i}": sent_to(od, f"d{i}") for i in range(DEPLOYMENTS)}
    total = sum(sent.values())
    return {name: count / total for name, count in sent.items()}


# --- the report ---------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(slots=True)
class Row:
    """Medians over a contender's repeats."""

    name: str
    throughput: float
    p50: float
    p95: float
    p99: float
    max: float
    slow_calls: float
    errors: int

    @classmethod
    def of(cls, runs: list[Run]) -> Row:
        median = statistics.median
        return cls(
            runs[0].name,
            median(r.throughput for r in runs),
            median(quantile(r.latencies, 0.5) for r in runs),
            median(quantile(r.latencies, 0.95) for r in runs),
            median(quantile(r.latencies, 0.99) for r in runs),
            median(max(r.latencies) for r in runs),
            median(r.slow_calls for r in runs),
            sum(r.errors for r in runs),
        )


def print_table(rows: list[Row], repeats: int) -> None:
    print(f"\nmedians of {repeats} run(s) each")
    print(
        f"{'contender':>12} {'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'sent to d0 while slow':>22} {'errors':>7}"
    )
    for r in rows:
        print(
            f"{r.name:>12} {r.throughput:>8.1f} {r.p50 * 1e3:>7.0f} {r.p95 * 1e3:>7.0f} "
            f"{r.p99 * 1e3:>7.0f} {r.max * 1e3:>7.0f} {r.slow_calls:>22.0f} {r.errors:>7}"
        )


def print_verdict(rows: dict[str, Row], shares: list[dict[str, float]]) -> bool:
    default, oracle, turns = rows["peak_ewma"], rows["oracle"], rows["round_robin"]
    vs_oracle = default.p99 / oracle.p99
    vs_turns = turns.p99 / default.p99
    share = {name: statistics.median(s[name] for s in shares) for name in shares[0]}
    worst = max(abs(value * DEPLOYMENTS - 1.0) for value in share.values())
    shown = ", ".join(f"{name} {value:.1%}" for name, value in share.items())
    checks = [
        (
            f"p99(peak_ewma) / p99(oracle) = {vs_oracle:.2f} (<= {MAX_DEFAULT_VS_ORACLE})",
            vs_oracle <= MAX_DEFAULT_VS_ORACLE,
        ),
        (
            f"p99(round_robin) / p99(peak_ewma) = {vs_turns:.1f} (>= {MIN_ROUND_ROBIN_VS_DEFAULT})",
            vs_turns >= MIN_ROUND_ROBIN_VS_DEFAULT,
        ),
        (
            f"all healthy, shares {shown}: worst {worst:.1%} off fair (<= 10%)",
            worst <= SHARE_TOLERANCE,
        ),
        (f"errors reaching the agents: {sum(r.errors for r in rows.values())}", True),
    ]
    print()
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


# --- main ---------------------------------------------------------------------------------


async def compare(
    sims: Sims, args: argparse.Namespace
) -> tuple[dict[str, Row], list[dict[str, float]]]:
    runs: dict[str, list[Run]] = {name: [] for name in CONTENDERS}
    shares: list[dict[str, float]] = []
    for repeat in range(args.repeats):
        for name in CONTENDERS:
            run = await run_contender(sims, name, args)
            runs[name].append(run)
            print(
                f"run {repeat + 1} {name:>11}: {run.throughput:6.1f} calls/s, "
                f"p99 {quantile(run.latencies, 0.99) * 1e3:5.0f} ms, "
                f"max {max(run.latencies) * 1e3:5.0f} ms, {run.slow_calls} sent to d0 while slow",
                flush=True,
            )
        shares.append(await healthy_shares(sims, args))
        print(
            f"run {repeat + 1} all healthy: "
            + ", ".join(f"{n} {s:.1%}" for n, s in shares[-1].items()),
            flush=True,
        )
    return {name: Row.of(runs[name]) for name in CONTENDERS}, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=32, help="agents calling back to back")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before d0 turns slow")
    parser.add_argument("--window", type=float, default=6.0, help="seconds d0 stays slow")
    parser.add_argument("--after", type=float, default=3.0, help="seconds measured after")
    parser.add_argument("--share-seconds", type=float, default=6.0, help="all-healthy phase")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender")
    args = parser.parse_args()
    phase = args.warmup + args.window + args.after
    total = (phase * len(CONTENDERS) + args.share_seconds) * args.repeats
    print(
        f"{DEPLOYMENTS} deployments, {args.agents} agents; d0 slow (x{SLOW_FACTOR:g}, ~2 s) "
        f"from {args.warmup:g} s for {args.window:g} s of each {phase:g} s run; "
        f"{args.repeats} repeat(s) (about {total / 60:.1f} min)"
    )
    with Sims() as sims:
        rows, shares = uvloop.run(compare(sims, args))
    print_table(list(rows.values()), args.repeats)
    ok = print_verdict(rows, shares)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
