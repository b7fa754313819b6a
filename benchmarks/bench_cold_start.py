"""Cold start: three deployments, one slow from its very first call, a burst at start.

    python benchmarks/bench_cold_start.py [--burst 60] [--repeats 3]

Three simulated deployments serve one model, each a ``SimServer`` in a child
process of its own: two answer in about 0.25 s (time to first token, a short
answer, the sim's jitter), one takes 2 s for every call. A fresh engine (no
history of any deployment) gets ``--burst`` chat calls at once, then the same
again once they are answered (a second fan-out of the same agent). Every call
is timed as the caller sees it.

Contenders, each on a fresh engine, in the same run:

* ``race`` (the default, ``[routing] cold_start = "race"``): a call routed to a
  deployment that has answered nothing yet also goes to another one at once;
  the first answer wins.
* ``off``: the balancer alone, blind until answers come back.
* ``oracle``: an engine over the two fast deployments only, i.e. one that never
  picks the slow one.

Reported: p50 and p99 of each burst and of both, upstream calls made per
call (the price of racing), and p99 ratios to the oracle; medians over
``--repeats`` interleaved runs. Acceptance: p99(race) <= 1.3x p99(oracle).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sim_process import SimProcess
from overdrive import Overdrive
from overdrive.sim import SimConfig

MODEL = "gpt-sim"
FAST_TTFT_S = 0.2
SLOW_TTFT_S = 2.0
PER_TOKEN_S = 0.002
MAX_TOKENS = 16
CONTENDERS = ("race", "off", "oracle")
MAX_RACE_VS_ORACLE = 1.3


def sim_config(seed: int, ttft: float) -> SimConfig:
    return SimConfig(seed=seed, ttft_s=ttft, per_token_s=PER_TOKEN_S, models=(MODEL,))


def engine_config(urls: list[str], cold_start: str) -> dict[str, Any]:
    upstreams = [
        {"name": f"d{n}", "base_url": url, "models": [MODEL], "concurrency": 512}
        for n, url in enumerate(urls)
    ]
    return {
        "upstreams": upstreams,
        "cache": {"enabled": False},
        "routing": {"cold_start": cold_start},
    }


async def burst(od: Overdrive, size: int, tag: str) -> list[float]:
    async def one(n: int) -> float:
        started = time.perf_counter()
        await od.chat(
            model=MODEL,
            messages=[{"role": "user", "content": f"{tag} question {n}"}],
            max_tokens=MAX_TOKENS,
        )
        return time.perf_counter() - started

    return list(await asyncio.gather(*(one(n) for n in range(size))))


async def run_once(urls: list[str], cold_start: str, size: int, seed: int) -> dict[str, Any]:
    async with Overdrive.from_config(engine_config(urls, cold_start)) as od:
        first = await burst(od, size, f"r{seed} first")
        second = await burst(od, size, f"r{seed} second")
        sent = od.metrics.value("overdrive_upstream_requests_total")
    both = first + second
    return {
        "first_p50": percentile(first, 50),
        "first_p99": percentile(first, 99),
        "second_p99": percentile(second, 99),
        "p50": percentile(both, 50),
        "p99": percentile(both, 99),
        "calls_per_call": sent / len(both),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def measure(size: int, repeats: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    configs = [sim_config(1, FAST_TTFT_S), sim_config(2, FAST_TTFT_S), sim_config(3, SLOW_TTFT_S)]
    with SimProcess(configs[0]) as a, SimProcess(configs[1]) as b, SimProcess(configs[2]) as slow:
        # The slow deployment is listed first: a blind balancer's ties favour it.
        every = [slow.base_url, a.base_url, b.base_url]
        for repeat in range(repeats):
            for name in CONTENDERS:
                urls = every[1:] if name == "oracle" else every
                mode = "off" if name == "oracle" else name  # the oracle needs no race
                runs[name].append(uvloop.run(run_once(urls, mode, size, repeat)))
    return {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }


def report(figures: dict[str, dict[str, float]]) -> str:
    oracle = figures["oracle"]["p99"]
    lines = [
        f"{'contender':<10}{'1st p50':>9}{'1st p99':>9}{'2nd p99':>9}{'p50':>8}{'p99':>8}"
        f"{'p99/oracle':>12}{'calls/call':>12}"
    ]
    for name, row in figures.items():
        lines.append(
            f"{name:<10}{row['first_p50']:>9.3f}{row['first_p99']:>9.3f}{row['second_p99']:>9.3f}"
            f"{row['p50']:>8.3f}{row['p99']:>8.3f}{row['p99'] / oracle:>11.2f}x"
            f"{row['calls_per_call']:>12.2f}"
        )
    ratio = figures["race"]["p99"] / oracle
    verdict = "PASS" if ratio <= MAX_RACE_VS_ORACLE else "FAIL"
    lines.append(
        f"p99(race) / p99(oracle) = {ratio:.2f}x (goal <= {MAX_RACE_VS_ORACLE}x): {verdict}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(report(measure(args.burst, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
