"""Does the memory tier's byte budget bound the real memory it holds?

A fresh subprocess makes a ``MemoryCache`` with a budget, then writes ten
times the budget of varied values (strings, JSON-like dicts, lists of
floats) under distinct keys, letting the cache size each one itself
(``deep_sizeof`` plus the per-entry overhead, as ``size=None`` does). It reads its resident set
size from ``/proc/self/statm`` before and during the writes and reports
the growth over the budget; the target is at most 1.2x.

Run: ``python benchmarks/bench_memory_bound.py [--budget-mb 64] [--factor 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def make_values(rng: random.Random) -> list[Callable[[int], Any]]:
    def text(i: int) -> str:
        return f"{i}:" + "x" * rng.randint(100, 20_000)

    def answer(i: int) -> dict[str, Any]:
        content = "y" * rng.randint(50, 4000)
        return {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": rng.randint(1, 999), "completion_tokens": i % 1000},
        }

    def floats(i: int) -> list[float]:
        return [rng.random() for _ in range(rng.randint(10, 1536))]

    return [text, answer, floats]


def child(budget: int, factor: float) -> dict[str, float]:
    from overdrive.cache._memory import ENTRY_OVERHEAD, MemoryCache
    from overdrive.cache._sizeof import deep_sizeof

    rng = random.Random(1)
    makers = make_values(rng)
    cache: MemoryCache[Any] = MemoryCache(budget)
    base = rss()
    peak, written, i = base, 0, 0
    while written < factor * budget:
        key, value = f"key-{i}", makers[i % 3](i)
        # The cache's own charge for size=None, computed here once so it can be tallied.
        charge = deep_sizeof(value) + sys.getsizeof(key) + ENTRY_OVERHEAD
        cache.set(key, value, charge)
        written += charge
        i += 1
        if i % 256 == 0:
            peak = max(peak, rss())
    peak = max(peak, rss())
    return {
        "budget": budget,
        "written": written,
        "entries_written": i,
        "entries_held": len(cache),
        "bytes_used": cache.bytes_used,
        "rss_growth": rss() - base,
        "rss_peak_growth": peak - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mb", type=float, default=64)
    parser.add_argument("--factor", type=float, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = int(args.budget_mb * (1 << 20))
    if args.child:
        print(json.dumps(child(budget, args.factor)))
        return
    argv = [sys.executable, __file__, "--child", f"--budget-mb={args.budget_mb}"]
    out = subprocess.run([*argv, f"--factor={args.factor}"], capture_output=True, check=True)
    report(json.loads(out.stdout))


def report(r: dict[str, float]) -> None:
    mb = 1 << 20
    print(f"budget            {r['budget'] / mb:8.1f} MB")
    print(f"written (charged) {r['written'] / mb:8.1f} MB in {r['entries_written']:,.0f} entries")
    print(f"held              {r['bytes_used'] / mb:8.1f} MB in {r['entries_held']:,.0f} entries")
    print(
        f"RSS growth        {r['rss_growth'] / mb:8.1f} MB = {r['rss_growth'] / r['budget']:.2f}x"
    )
    peak = r["rss_peak_growth"]
    print(f"RSS peak growth   {peak / mb:8.1f} MB = {peak / r['budget']:.2f}x budget")


if __name__ == "__main__":
    main()
