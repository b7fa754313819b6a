"""A cold burst of 60 calls through a fresh engine: ``"auto"`` vs fixed limits vs no overdrive.

    python benchmarks/bench_cold_burst.py [--calls 60] [--repeats 7] [--json FILE] [--quick]

An agent's first parallel fan-out: ``--calls`` chat completions started at the
same instant, through an engine built just before (cold connections, an
adaptive limit that has seen nothing). The simulated upstream is fast and
unlimited: 250 ms to the first token plus 4 ms a token (answers of
``--max-tokens`` tokens, 16 by default), the sim's jitter, no rate limit, no
capacity knee: nothing is gained by holding calls back, so the best a limit
can do is let the whole burst go.

Contenders, one fresh engine (or client) per run: ``concurrency = "auto"``,
each fixed limit of ``--limits``, and no overdrive at all (``openai``: the
openai SDK's ``AsyncOpenAI`` straight at the sim, a fresh client per run).
The engine's cache is off and every prompt is distinct. Each run measures
every call's latency from the burst's start, p50 and p95 of them, and
throughput: calls / time until the last one ended. Every contender runs
``--repeats`` times, interleaved; the table shows medians.

Acceptance: auto's throughput >= 0.95x the best fixed limit's, and its p50 no
more than 1/0.95x the best fixed p50 (each against the best fixed limit for it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
import uvloop
from openai.types.chat import ChatCompletionMessageParam

from _sim_process import SimProcess
from overdrive import Overdrive
from overdrive.sim import SimConfig

MODEL = "gpt-4o-mini"
SWEEP = (8, 16, 32, 64, 128)
MIN_RATIO = 0.95
NO_OVERDRIVE = "openai"

Contender = int | str
Call = Callable[[int], Awaitable[object]]


@dataclass(slots=True)
class Run:
    """One burst: each call's latency from the burst's start, and when the last ended."""

    latencies: list[float]
    makespan: float
    errors: int


@dataclass(slots=True)
class Row:
    """Medians over a contender's repeats."""

    contender: str
    p50_ms: float
    p95_ms: float
    throughput: float
    errors: int

    @classmethod
    def of(cls, contender: Contender, runs: list[Run]) -> Row:
        return cls(
            str(contender),
            statistics.median(quantile(r.latencies, 0.5) for r in runs) * 1e3,
            statistics.median(quantile(r.latencies, 0.95) for r in runs) * 1e3,
            statistics.median(len(r.latencies) / r.makespan for r in runs),
            sum(r.errors for r in runs),
        )


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def question(number: int) -> list[ChatCompletionMessageParam]:
    # Distinct prompts: nothing to cache or coalesce.
    return [{"role": "user", "content": f"Fan-out question {number}: what is the next step?"}]


# --- one burst ----------------------------------------------------------------------------


async def burst(call: Call, calls: int) -> Run:
    """``calls`` calls started at once; each latency is timed from the start of all."""
    start = time.perf_counter()
    errors = 0

    async def one(number: int) -> float | None:
        nonlocal errors
        try:
            await call(number)
        except Exception:
            errors += 1
            return None
        return time.perf_counter() - start

    ended = await asyncio.gather(*(one(i) for i in range(calls)))
    latencies = [latency for latency in ended if latency is not None]
    return Run(latencies, max(latencies, default=float("nan")), errors)


async def through_overdrive(base_url: str, limit: int | str, args: argparse.Namespace) -> Run:
    upstream = {
        "name": "sim",
        "base_url": base_url,
        "models": [MODEL],
        "concurrency": limit,
        "timeout": 30,
    }
    config = {"upstreams": [upstream], "cache": {"enabled": False}}
    async with Overdrive.from_config(config) as od:

        async def call(number: int) -> object:
            return await od.chat(model=MODEL, messages=question(number), max_tokens=args.max_tokens)

        return await burst(call, args.calls)


async def without_overdrive(base_url: str, args: argparse.Namespace) -> Run:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    try:

        async def call(number: int) -> object:
            return await client.chat.completions.create(
                model=MODEL, messages=question(number), max_tokens=args.max_tokens
            )

        return await burst(call, args.calls)
    finally:
        await client.close()


async def run_one(base_url: str, contender: Contender, args: argparse.Namespace) -> Run:
    if contender == NO_OVERDRIVE:
        return await without_overdrive(base_url, args)
    return await through_overdrive(base_url, contender, args)


async def sweep(base_url: str, args: argparse.Namespace) -> dict[Contender, list[Run]]:
    contenders: list[Contender] = ["auto", *args.limits, NO_OVERDRIVE]
    runs: dict[Contender, list[Run]] = {c: [] for c in contenders}
    # Unmeasured: the first burst of the process pays for its imports and the sim's first calls.
    await run_one(base_url, max(args.limits), args)
    for repeat in range(args.repeats):
        # A different contender goes first each time: no one always follows the same one.
        shift = repeat % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            run = await run_one(base_url, contender, args)
            runs[contender].append(run)
            print(
                f"run {repeat + 1} {contender!s:>6}: "
                f"p50 {quantile(run.latencies, 0.5) * 1e3:4.0f} ms, "
                f"p95 {quantile(run.latencies, 0.95) * 1e3:4.0f} ms, "
                f"{len(run.latencies) / run.makespan:6.1f} calls/s",
                flush=True,
            )
    return runs


# --- the report ---------------------------------------------------------------------------


def print_table(rows: list[Row], best: Row, auto: Row, repeats: int) -> None:
    print(f"\nmedians of {repeats} burst(s) each")
    print(
        f"{'contender':>9} {'p50 ms':>7} {'p95 ms':>7} {'calls/s':>8} "
        f"{'auto/it calls/s':>16} {'auto/it p50':>12} {'errors':>7}"
    )
    for row in rows:
        mark = "  <- best fixed" if row is best else ""
        print(
            f"{row.contender:>9} {row.p50_ms:>7.0f} {row.p95_ms:>7.0f} {row.throughput:>8.1f} "
            f"{auto.throughput / row.throughput:>15.3f}x {auto.p50_ms / row.p50_ms:>11.3f}x "
            f"{row.errors:>7}{mark}"
        )


def verdict(auto: Row, fixed: list[Row]) -> list[tuple[str, bool]]:
    """Auto against the best fixed limit on each figure (the best p50 may be another limit's)."""
    best = max(fixed, key=lambda row: row.throughput)
    quickest = min(fixed, key=lambda row: row.p50_ms)
    throughput = auto.throughput / best.throughput
    p50 = auto.p50_ms / quickest.p50_ms
    return [
        (f"throughput {throughput:.3f}x best fixed ({best.contender})", throughput >= MIN_RATIO),
        (
            f"p50 {p50:.3f}x best fixed's ({quickest.contender}; at most {1 / MIN_RATIO:.3f}x)",
            p50 <= 1 / MIN_RATIO,
        ),
        (f"no call failed ({auto.errors} did)", auto.errors == 0),
    ]


def report(runs: dict[Contender, list[Run]], args: argparse.Namespace) -> bool:
    rows = [Row.of(contender, r) for contender, r in runs.items()]
    auto = rows[0]
    fixed = [row for row in rows if row.contender not in ("auto", NO_OVERDRIVE)]
    best = max(fixed, key=lambda row: row.throughput)
    print_table(rows, best, auto, args.repeats)
    checks = verdict(auto, fixed)
    print("\nauto vs the best fixed limit:")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        figures: dict[str, Any] = {
            "calls": args.calls,
            "repeats": args.repeats,
            "best_fixed": best.contender,
            "rows": {row.contender: asdict(row) for row in rows},
            "passed": all(ok for _, ok in checks),
        }
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return all(ok for _, ok in checks)


# --- main ---------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=60, help="calls in the burst")
    parser.add_argument("--repeats", type=int, default=7, help="bursts per contender")
    parser.add_argument("--max-tokens", type=int, default=16, help="answer length, tokens")
    parser.add_argument(
        "--limits", type=int, nargs="+", default=list(SWEEP), help="fixed limits to sweep"
    )
    parser.add_argument("--json", help="write the figures to this file too")
    parser.add_argument(
        "--quick", action="store_true", help="a small run to check the output (no verdict)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeats, args.limits = 12, 1, [4, 16]
    return args


def main() -> None:
    args = parse()
    config = SimConfig(seed=11, ttft_s=0.25, per_token_s=0.004, models=(MODEL,))
    print(
        f"cold burst of {args.calls} calls, sim ttft 250 ms + 4 ms/token x {args.max_tokens}, "
        f"no limits; auto, fixed {args.limits}, {NO_OVERDRIVE}; {args.repeats} burst(s) each"
    )
    with SimProcess(config) as sim:
        runs = uvloop.run(sweep(sim.base_url, args))
    ok = report(runs, args)
    raise SystemExit(0 if ok or args.quick else 1)


if __name__ == "__main__":
    main()
