"""Hit ratio of the memory tier's W-TinyLFU against LRU and Belady's offline optimum.

Seeded traces: Zipf (skew 0.9 and 1.1) over ``--keys`` distinct keys, and a
scan-polluted trace (Zipf phases alternating with one-pass scans of fresh
keys). Every key has a size drawn once (log-normal, 64 B to 64 KiB); every
policy gets the same byte budget, a share of all distinct keys' bytes. Each
request is read-through: ``get``, and on a miss ``set`` with the key's size.

Belady: on a miss the key is taken in, then while over budget the resident
key (newcomer included) whose next use is farthest is evicted. With sizes
this rule is a strong reference, not a proven optimum.

The hit cost of ``get`` is printed too (timeit, median of runs).

Run: ``python benchmarks/bench_hit_ratio.py [--requests 1000000] [--keys 100000]``
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
import time
import timeit
from collections.abc import Callable, Sequence

from overdrive.cache._memory import MemoryCache, Policy

Trace = list[int]
_ENTRY_SHARE = 0.25  # the cache's default refusal threshold, applied to Belady too


def zipf_trace(rng: random.Random, keys: int, skew: float, requests: int) -> Trace:
    cum = list(itertools.accumulate(1.0 / (rank**skew) for rank in range(1, keys + 1)))
    ids = list(range(keys))
    rng.shuffle(ids)  # popularity unrelated to key value (and so to its hash)
    picks = rng.choices(range(keys), cum_weights=cum, k=requests)
    return [ids[p] for p in picks]


def scan_trace(rng: random.Random, keys: int, requests: int) -> Trace:
    """Zipf(0.9) phases of 100k requests, each followed by a 50k scan of never-seen keys."""
    hot = zipf_trace(rng, keys, 0.9, requests)
    trace: Trace = []
    fresh = itertools.count(keys)
    for start in range(0, requests, 100_000):
        trace += hot[start : start + 100_000]
        trace += [next(fresh) for _ in range(50_000)]
    return trace[:requests]


def key_sizes(rng: random.Random, trace: Trace) -> dict[int, int]:
    """One size per key: log-normal around ~1.1 KiB, clipped to 64 B .. 64 KiB."""
    return {k: min(65536, max(64, int(rng.lognormvariate(7.0, 1.0)))) for k in set(trace)}


def run_cache(policy: Policy, trace: Trace, sizes: dict[int, int], budget: int) -> float:
    cache: MemoryCache[int] = MemoryCache(budget, policy=policy)
    get, put = cache.get, cache.set
    for key in trace:
        if get(key) is None:
            put(key, 1, sizes[key])
    return cache.stats.hit_ratio()


def run_belady(trace: Trace, sizes: dict[int, int], budget: int) -> float:
    next_use = _next_uses(trace)
    resident: dict[int, int] = {}  # key -> index of its next use
    farthest: list[tuple[int, int]] = []  # (-next use, key); stale rows skipped lazily
    used = hits = 0
    for i, key in enumerate(trace):
        nxt = next_use[i]
        if key in resident:
            hits += 1
        elif sizes[key] > budget * _ENTRY_SHARE:
            continue
        else:
            used += sizes[key]
        resident[key] = nxt
        heapq.heappush(farthest, (-nxt, key))
        while used > budget:
            neg, victim = heapq.heappop(farthest)
            if resident.get(victim) == -neg:
                del resident[victim]
                used -= sizes[victim]
    return hits / len(trace)


def _next_uses(trace: Trace) -> list[int]:
    never = len(trace)
    seen: dict[int, int] = {}
    out = [never] * len(trace)
    for i in range(len(trace) - 1, -1, -1):
        out[i] = seen.get(trace[i], never)
        seen[trace[i]] = i
    return out


def hit_cost_ns(policy: Policy, distinct: int, runs: int = 7) -> float:
    """Median ns per ``get`` hit over Zipf(0.9)-chosen keys that are all resident."""
    cache: MemoryCache[int] = MemoryCache(1 << 30, policy=policy)
    for key in range(distinct):
        cache.set(key, key, 100)
    rng = random.Random(7)
    cum = list(itertools.accumulate(1.0 / (r**0.9) for r in range(1, distinct + 1)))
    keys = rng.choices(range(distinct), cum_weights=cum, k=100_000)
    get = cache.get
    loop = timeit.repeat(lambda: [None for _ in keys], number=1, repeat=runs)
    timed = timeit.repeat(lambda: [get(k) for k in keys], number=1, repeat=runs)
    return (statistics.median(timed) - statistics.median(loop)) / len(keys) * 1e9


def _row(name: str, cells: Sequence[object]) -> str:
    return f"{name:<22}" + "".join(f"{c:>10}" for c in cells)


def compare(name: str, trace: Trace, sizes: dict[int, int], shares: Sequence[float]) -> None:
    total = sum(sizes.values())
    for share in shares:
        budget = int(total * share)
        started = time.perf_counter()
        tiny = run_cache("tinylfu", trace, sizes, budget)
        lru = run_cache("lru", trace, sizes, budget)
        opt = run_belady(trace, sizes, budget)
        took = time.perf_counter() - started
        label = f"{name} @{share:.1%}"
        cells = [
            f"{tiny:.4f}",
            f"{lru:.4f}",
            f"{opt:.4f}",
            f"{tiny / lru:.3f}",
            f"{tiny / opt:.3f}",
        ]
        print(_row(label, [*cells, f"{took:.0f}s"]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    traces: dict[str, Callable[[], Trace]] = {
        "zipf 0.9": lambda: zipf_trace(rng, args.keys, 0.9, args.requests),
        "zipf 1.1": lambda: zipf_trace(rng, args.keys, 1.1, args.requests),
        "zipf 0.9 + scans": lambda: scan_trace(rng, args.keys, args.requests),
    }
    print(f"{args.requests:,} requests over {args.keys:,} keys; budget = share of all keys' bytes")
    print(_row("trace @budget", ["tinylfu", "lru", "belady", "tiny/lru", "tiny/opt", "time"]))
    for name, make in traces.items():
        trace = make()
        compare(name, trace, key_sizes(rng, trace), args.shares)
    print("\nget() hit cost, median ns (Zipf 0.9 keys, all resident):")
    for distinct in (1_000, 100_000):
        costs = [f"{hit_cost_ns(p, distinct):.0f}" for p in ("tinylfu", "lru")]
        print(f"  {distinct:>7,} keys   tinylfu {costs[0]:>5} ns   lru {costs[1]:>5} ns")


if __name__ == "__main__":
    main()
