"""What the semantic tier costs: lookup time and memory per entry by size, and what a miss adds.

    python benchmarks/bench_semantic_cost.py [--sizes 10000 100000] [--json PATH] [--quick]

Three figures, on this machine's CPU:

* **Lookup** at each size: one scope holding ``size`` entries (the worst
  case: a Q&A agent whose calls all share one system prompt), each a
  question with a 384-d vector from clustered synthetic data (embedding
  100,000 real questions would take the model minutes). A lookup is the
  tier's real path (index search, then the guard over the candidates) for a
  query vector near a stored one; p50 and p99 over many lookups. The model's
  own time to embed one question is measured beside it (real model, real
  questions), so lookup + embed is what a caller waits.
* **Memory per entry**: the bytes the tier books per entry (what bounds it,
  under ``[cache.semantic] memory``) beside how much the process's resident
  memory grew while it filled (which sees the vector library's own memory).
* **A miss's added time**: chat calls through the engine to the simulated
  upstream (no latency of its own), the tier off, then on over a scope
  already holding entries: a miss *near* an entry (the same words, another
  number: embedded, then refused by the guard) and one *far* from every
  entry (too few shared words to pass the content gate: nothing embedded);
  median and p99 per call and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from overdrive import Overdrive
from overdrive._calls import chat_call
from overdrive.cache.semantic import BatchedEncoder, Guard, Probe, SemanticTier, local_encoder
from overdrive.sim import SimConfig, SimServer

DIM = 384
TOPICS = ("invoice", "password", "shipping", "refund", "account", "order", "plan", "login")
VERBS = ("change", "find", "cancel", "update", "check", "download", "reset", "share")
CHAT = "gpt-4o-mini"


def questions(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"How do I {rng.choice(VERBS)} my {rng.choice(TOPICS)} {rng.choice(TOPICS)} "
        f"in the {rng.choice(TOPICS)} settings page?"
        for _ in range(count)
    ]


def clustered(count: int, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.float32]]:
    centres = rng.standard_normal((max(1, count // 50), DIM)).astype(np.float32)
    picks = rng.integers(0, len(centres), count)
    vectors = centres[picks] + 0.35 * rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def resident_bytes() -> int:
    """This process's resident memory (Linux), which also sees what C libraries allocate."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def filled_tier(size: int, seed: int) -> tuple[SemanticTier, np.ndarray[Any, Any], float]:
    """A tier of ``size`` entries in one scope; its vectors; the resident memory it added."""
    rng = np.random.default_rng(seed)
    vectors = clustered(size, rng)
    texts = questions(size, seed)

    def never(texts: list[str]) -> Any:
        raise RuntimeError("every probe here carries its vector")

    tier = SemanticTier(
        BatchedEncoder(never, name="synthetic"),
        Guard(),
        memory=1 << 34,
        max_entries=size,
        wall=time.time,
    )
    gc.collect()
    before = resident_bytes()
    for index in range(size):
        probe = Probe(b"one scope", texts[index], vector=vectors[index])
        tier.remember(probe, index.to_bytes(8, "big"), ttl=3600)
        if index % 1000 == 999:
            await tier.settle()
    await tier.settle()
    gc.collect()
    return tier, vectors, resident_bytes() - before


async def lookup_times(tier: SemanticTier, vectors: Any, lookups: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed + 1)
    texts = questions(lookups, seed)  # the same generator: many share facts with an entry
    seconds = []
    for index in range(lookups):
        target = vectors[int(rng.integers(0, len(vectors)))]
        query = target + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        query /= np.linalg.norm(query)
        probe = Probe(b"one scope", texts[index], vector=query.astype(np.float32))
        started = time.perf_counter()
        await tier.lookup(probe)
        seconds.append(time.perf_counter() - started)
    return seconds


async def size_figures(size: int, lookups: int, seed: int) -> dict[str, float]:
    tier, vectors, resident = await filled_tier(size, seed)
    seconds = await lookup_times(tier, vectors, lookups, seed)
    figures = {
        "entries": float(len(tier)),
        "lookup_p50_ms": 1000 * statistics.median(seconds),
        "lookup_p99_ms": 1000 * quantile(seconds, 0.99),
        "booked_bytes_per_entry": tier.bytes_used / len(tier),
        "resident_bytes_per_entry": resident / len(tier),
    }
    await tier.aclose()
    return figures


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def embed_times(count: int) -> list[float]:
    """One question at a time through the real model (its first, loading, call not counted)."""
    encoder = BatchedEncoder(local_encoder("all-MiniLM-L6-v2"), name="local")
    await encoder.embed(["warm up"])
    seconds = []
    for text in questions(count, 7):
        started = time.perf_counter()
        await encoder.embed([text])
        seconds.append(time.perf_counter() - started)
    await encoder.aclose()
    return seconds


# The scope is filled with these; a "near" miss asks the same words with another
# number (embedded, then refused by the numbers check), a "far" one shares too
# few words with any entry to pass the content gate (refused before embedding).
FILL = "What does plan {} cost per month?"
NEAR = "What does plan {} cost per month?"
FAR = "Which {} {} in the {} stays open late?"


def far_question(index: int) -> str:
    """A question whose content words no other question here uses (made-up words)."""
    rng = random.Random(index)
    words = ["".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))]
    words += [words[0] + suffix for suffix in ("ex", "ium")]
    return FAR.format(*words)


async def call_times(sim: SimServer, semantic: bool, miss: str, calls: int) -> list[float]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    cache = {"disk": None, "semantic": {"enabled": semantic}}
    seconds = []
    async with Overdrive.from_config({"upstreams": [upstream], "cache": cache}) as od:
        if od.semantic is not None:
            await od.semantic.warm()
        fill = [FILL.format(index) for index in range(20)]
        asked = [
            far_question(index) if miss == FAR else miss.format(1000 + index)
            for index in range(calls)
        ]
        for index, text in enumerate(fill + asked):
            body = {"model": CHAT, "messages": [{"role": "user", "content": text}]}
            started = time.perf_counter()
            await od.request(chat_call(body))
            if index >= len(fill):
                seconds.append(time.perf_counter() - started)
            if od.semantic is not None:
                await od.semantic.settle()  # not the caller's time: remembered after
    return seconds


async def miss_figures(calls: int) -> dict[str, float]:
    config = SimConfig(seed=1, ttft_s=0.0, per_token_s=0.0, jitter=0.0, models=(CHAT,))
    figures: dict[str, float] = {}
    with SimServer(config) as sim:
        off = await call_times(sim, False, NEAR, calls)
        figures["off_p50_ms"] = 1000 * statistics.median(off)
        figures["off_p99_ms"] = 1000 * quantile(off, 0.99)
        for kind, miss in (("near", NEAR), ("far", FAR)):
            on = await call_times(sim, True, miss, calls)
            figures[f"{kind}_p50_ms"] = 1000 * statistics.median(on)
            figures[f"{kind}_p99_ms"] = 1000 * quantile(on, 0.99)
            figures[f"{kind}_added_p50_ms"] = figures[f"{kind}_p50_ms"] - figures["off_p50_ms"]
    return figures


async def run(sizes: list[int], lookups: int, calls: int) -> dict[str, Any]:
    by_size = {str(size): await size_figures(size, lookups, seed=size) for size in sizes}
    embed = await embed_times(lookups // 5 or 20)
    return {
        "sizes": by_size,
        "embed_p50_ms": 1000 * statistics.median(embed),
        "embed_p99_ms": 1000 * quantile(embed, 0.99),
        "miss": await miss_figures(calls),
    }


def report(figures: dict[str, Any]) -> None:
    print(
        f"{'entries in one scope':>22} {'lookup p50':>11} {'lookup p99':>11}"
        f" {'booked B/entry':>15} {'resident B/entry':>17}"
    )
    for size, row in figures["sizes"].items():
        print(
            f"{int(size):>22,} {row['lookup_p50_ms']:>9.2f}ms {row['lookup_p99_ms']:>9.2f}ms"
            f" {row['booked_bytes_per_entry']:>15,.0f} {row['resident_bytes_per_entry']:>17,.0f}"
        )
    print(
        f"embedding one question (real model): p50 {figures['embed_p50_ms']:.2f} ms,"
        f" p99 {figures['embed_p99_ms']:.2f} ms"
    )
    miss = figures["miss"]
    print(
        f"a miss through the engine, tier off: p50 {miss['off_p50_ms']:.2f} ms,"
        f" p99 {miss['off_p99_ms']:.2f} ms"
    )
    for kind, what in (("near", "near an entry (embedded)"), ("far", "far from every entry")):
        print(
            f"  tier on, a miss {what}: p50 {miss[f'{kind}_p50_ms']:.2f} ms"
            f" (added {miss[f'{kind}_added_p50_ms']:.2f} ms), p99 {miss[f'{kind}_p99_ms']:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test suite")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.lookups, args.calls = [500, 3000], 200, 30
    figures = asyncio.run(run(args.sizes, args.lookups, args.calls))
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
