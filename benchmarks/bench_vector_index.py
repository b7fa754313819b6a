"""Which vector index a semantic-cache scope should use, and from what size on.

    python benchmarks/bench_vector_index.py [--sizes 1000,10000,100000] [--queries 2000]
        [--seed 1] [--quick] [--json PATH]

Data (seeded, dim 384 like all-MiniLM-L6-v2): unit vectors drawn around 2,000
gaussian cluster centres (noise of norm 0.8 around a unit centre: members of a
cluster are about 0.6 cosine apart), because sentence embeddings are clustered
and uniform random vectors are not. Queries: half are stored vectors perturbed
by noise of norm 0.2 (a paraphrase), half fresh draws from the clusters.

Contenders, in one run, each built on the same vectors:

* ``numpy``: ``ScopedIndex(backend="numpy")``, exact brute force;
* ``usearch``: ``ScopedIndex(backend="usearch")`` (usearch HNSW, its defaults:
  connectivity 16, expansion_add 128, expansion_search 64);
* ``hnswlib``: ``M=16, ef_construction=200, ef=64``, inner product;
* ``faiss-flat``: ``IndexFlatIP``, exact;
* ``faiss-hnsw``: ``IndexHNSWFlat(M=16)``, efConstruction 200, efSearch 64, inner product.

The two ScopedIndex contenders are built one ``add`` at a time (how the cache
fills them); hnswlib and faiss get one batch ``add`` (their usual way, on every
core), so their build time is a lower bound for one-at-a-time use. Figures per
contender and size: build time per vector; single-query top-5 latency p50 and
p99 (µs, every query timed alone, contenders interleaved query by query so
machine noise hits them alike; the median over ``--rounds`` of each round's
percentile); recall@1 against exact brute force (all queries, paraphrases,
fresh draws); bytes per vector, twice: as reported (ScopedIndex's ``nbytes``:
numpy arrays' ``nbytes``, usearch's ``memory_usage``; hnswlib's serialised
size; faiss's own arrays) and as the process's resident-set growth over the
build (/proc/self/statm); and whether it can remove a vector. Ratios are the
contender's figure over numpy's.

The crossover: one numpy and one usearch ScopedIndex grown together through
sizes 256 to 32,768 (doubling, in 1.5x steps from 4,096 to 16,384; ``--quick``:
256 to 4,096), p99 measured at each; printed is the first size from which
usearch's p99 stays below numpy's. That
figure is what ``EXACT_BELOW`` in ``overdrive/cache/semantic/_index.py`` comes
from. ``--quick`` (sizes 1,000 and 5,000, 300 queries) is a smoke test.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per query, set before numpy loads (override from the shell):
# a multi-threaded OpenBLAS gemv on a busy 2-core box turned numpy's p99 into
# milliseconds of thread wake-ups, and faiss's spinning OpenMP threads starved it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import gc
import importlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from overdrive.cache.semantic._index import EXACT_BELOW, ScopedIndex

Matrix = npt.NDArray[np.float32]
DIM = 384
TOP_K = 5
CENTRES = 2_000
SCOPE = b"bench"
# Finer where the crossover fell on earlier runs (4k .. 16k).
SWEEP_FULL = [256, 512, 1024, 2048, 4096, 6144, 8192, 12288, 16384, 32768]
SWEEP_QUICK = [256 * 2**i for i in range(5)]  # 256 .. 4,096


class Contender(Protocol):
    name: str
    removal: str

    def build(self, data: Matrix) -> None: ...
    def query(self, vector: Matrix) -> list[int]: ...
    def reported_bytes(self) -> int | None: ...


# -- data ------------------------------------------------------------------------


def unit(rows: Matrix) -> Matrix:
    normed: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normed.astype(np.float32)


def noise(rng: np.random.Generator, n: int, norm: float) -> Matrix:
    # Per-coordinate sigma so the noise vector's expected norm is ``norm``.
    return rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(norm / np.sqrt(DIM))


def clustered(rng: np.random.Generator, n: int) -> Matrix:
    centres = unit(rng.standard_normal((CENTRES, DIM), dtype=np.float32))
    return unit(centres[rng.integers(0, CENTRES, n)] + noise(rng, n, 0.8))


def queries_for(rng: np.random.Generator, data: Matrix, n: int) -> Matrix:
    perturbed = data[rng.integers(0, len(data), n // 2)] + noise(rng, n // 2, 0.2)
    fresh = clustered(rng, n - n // 2)  # same seed stream: new points of the same clusters
    return unit(np.concatenate([perturbed, fresh]))


def exact_top1(data: Matrix, queries: Matrix) -> npt.NDArray[np.intp]:
    top: npt.NDArray[np.intp] = np.argmax(queries @ data.T, axis=1)
    return top


# -- contenders ------------------------------------------------------------------


class Scoped:
    """Our ScopedIndex on one backend, filled one add at a time."""

    def __init__(self, backend: str) -> None:
        self.name = backend
        self.removal = "yes: swap with last" if backend == "numpy" else "yes: tombstone, rebuilt"
        self.index = ScopedIndex(DIM, backend="numpy" if backend == "numpy" else "usearch")

    def build(self, data: Matrix) -> None:
        for ident, vector in enumerate(data):
            self.index.add(SCOPE, ident, vector)

    def query(self, vector: Matrix) -> list[int]:
        return [ident for ident, _ in self.index.search(SCOPE, vector, TOP_K)]

    def reported_bytes(self) -> int | None:
        return self.index.nbytes


class Hnswlib:
    name = "hnswlib"
    removal = "mark only (mark_deleted)"

    def __init__(self) -> None:
        self.index: Any = None

    def build(self, data: Matrix) -> None:
        self.index = importlib.import_module("hnswlib").Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=len(data), M=16, ef_construction=200)
        self.index.add_items(data, np.arange(len(data)))
        self.index.set_ef(64)

    def query(self, vector: Matrix) -> list[int]:
        labels, _ = self.index.knn_query(vector, k=TOP_K, num_threads=1)
        return [int(label) for label in labels[0]]

    def reported_bytes(self) -> int | None:
        # Its serialised size: vectors and links, without the locks and the label map.
        return int(self.index.index_file_size())


class Faiss:
    def __init__(self, kind: str) -> None:
        self.name = f"faiss-{kind}"
        self.removal = "yes: remove_ids, O(n)" if kind == "flat" else "no"
        self.kind = kind
        self.index: Any = None

    def build(self, data: Matrix) -> None:
        faiss = importlib.import_module("faiss")
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # a batch build on every core
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(DIM)
        else:
            self.index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 200
            self.index.hnsw.efSearch = 64
        self.index.add(data)
        faiss.omp_set_num_threads(1)

    def query(self, vector: Matrix) -> list[int]:
        _, labels = self.index.search(vector.reshape(1, -1), TOP_K)
        return [int(label) for label in labels[0]]

    def reported_bytes(self) -> int | None:
        # The arrays it holds: the codes (the vectors), and for HNSW its link lists.
        if self.kind == "flat":
            return int(self.index.ntotal * self.index.code_size)
        hnsw = self.index.hnsw
        links = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        return int(self.index.ntotal * DIM * 4 + links)


def contenders() -> list[Contender]:
    return [Scoped("numpy"), Scoped("usearch"), Hnswlib(), Faiss("flat"), Faiss("hnsw")]


# -- measurement -----------------------------------------------------------------


@dataclass
class Figures:
    build_us_per_vector: float
    p50_us: float
    p99_us: float
    recall_at_1: float
    recall_at_1_paraphrase: float
    recall_at_1_fresh: float
    reported_bytes_per_vector: float
    rss_bytes_per_vector: float
    removal: str


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def built(contender: Contender, data: Matrix) -> tuple[float, float]:
    """Build seconds per vector and RSS growth per vector."""
    gc.collect()
    before, started = rss(), time.perf_counter()
    contender.build(data)
    seconds = time.perf_counter() - started
    return seconds / len(data), (rss() - before) / len(data)


Calls = list[Callable[[Matrix], list[int]]]


def timed(calls: Calls, queries: Matrix) -> tuple[list[list[float]], list[list[int]]]:
    """Per call, per query: µs and the top hit; calls interleaved query by query."""
    samples: list[list[float]] = [[] for _ in calls]
    tops: list[list[int]] = [[] for _ in calls]
    for query in queries:
        for i, call in enumerate(calls):
            started = time.perf_counter_ns()
            found = call(query)
            samples[i].append((time.perf_counter_ns() - started) / 1e3)
            tops[i].append(found[0] if found else -1)
    return samples, tops


def percentiles(
    calls: Calls, queries: Matrix, rounds: int
) -> tuple[list[Latency], list[list[int]]]:
    """Per call: the median over ``rounds`` of each round's p50 and p99; the first round's tops."""
    per_round = [timed(calls, queries) for _ in range(rounds)]
    latencies = []
    for i in range(len(calls)):
        p50s = [float(np.percentile(samples[i], 50)) for samples, _ in per_round]
        p99s = [float(np.percentile(samples[i], 99)) for samples, _ in per_round]
        latencies.append(Latency(statistics.median(p50s), statistics.median(p99s)))
    return latencies, per_round[0][1]


@dataclass
class Latency:
    p50_us: float
    p99_us: float


def recall(top: list[int], truth: npt.NDArray[np.intp]) -> float:
    return float(np.mean(np.asarray(top) == truth))


def measure_size(
    rng: np.random.Generator, size: int, n_queries: int, rounds: int
) -> dict[str, Figures]:
    data = clustered(rng, size)
    queries = queries_for(rng, data, n_queries)
    truth, half = exact_top1(data, queries), n_queries // 2
    field = contenders()
    builds = [built(contender, data) for contender in field]
    latencies, tops = percentiles([contender.query for contender in field], queries, rounds)
    figures = {}
    for contender, (build_s, rss_per), lat, top in zip(field, builds, latencies, tops, strict=True):
        figures[contender.name] = Figures(
            build_us_per_vector=build_s * 1e6,
            p50_us=lat.p50_us,
            p99_us=lat.p99_us,
            recall_at_1=recall(top, truth),
            recall_at_1_paraphrase=recall(top[:half], truth[:half]),
            recall_at_1_fresh=recall(top[half:], truth[half:]),
            reported_bytes_per_vector=(contender.reported_bytes() or 0) / size,
            rss_bytes_per_vector=rss_per,
            removal=contender.removal,
        )
    return figures


def sweep(
    rng: np.random.Generator, sizes: list[int], n_queries: int, rounds: int
) -> list[dict[str, float]]:
    """numpy's and usearch's p99 as one pair of scopes grows through ``sizes``."""
    data = clustered(rng, sizes[-1])
    pair = [Scoped("numpy"), Scoped("usearch")]
    points, filled = [], 0
    for size in sizes:
        for contender in pair:
            for ident in range(filled, size):
                contender.index.add(SCOPE, ident, data[ident])
        filled = size
        queries = queries_for(rng, data[:size], n_queries)
        (numpy, usearch), _ = percentiles([contender.query for contender in pair], queries, rounds)
        points.append(
            {
                "size": size,
                "numpy_p50_us": numpy.p50_us,
                "numpy_p99_us": numpy.p99_us,
                "usearch_p50_us": usearch.p50_us,
                "usearch_p99_us": usearch.p99_us,
            }
        )
    return points


def crossover(points: list[dict[str, float]]) -> int | None:
    """The first size from which usearch's p99 stays below numpy's (None: it never does)."""
    found: int | None = None
    for point in points:
        if point["usearch_p99_us"] < point["numpy_p99_us"]:
            found = int(point["size"]) if found is None else found
        else:
            found = None
    return found


# -- report ----------------------------------------------------------------------


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


LEGEND = """\
  build: µs per vector (numpy, usearch: one add at a time; the others: one batch add)
  p50, p99: µs per single top-5 query, the median of the rounds' figures
  recall@1: the exact nearest found, over all queries / paraphrases / fresh draws
  B/v: bytes per vector as the library reports it (numpy: nbytes; usearch: memory_usage,
       reserved in 16 MiB steps; hnswlib: its serialised size; faiss: its arrays), and the
       RSS growth over the build (/proc/self/statm; noisy below ~10k vectors)
  ratios: the contender's p99 and reported B/v over numpy's"""


def print_size(size: int, figures: dict[str, Figures]) -> None:
    base = figures["numpy"]
    print(f"\n{size:,} vectors, dim {DIM}, top-{TOP_K}")
    print(
        f"  {'':<11}{'build':>8}{'p50':>9}{'p99':>9}{'recall@1 all/para/fresh':>25}"
        f"{'B/v':>8}{'B/v rss':>9}{'p99/np':>8}{'B/np':>7}  removal"
    )
    for name, fig in figures.items():
        recalls = (fig.recall_at_1, fig.recall_at_1_paraphrase, fig.recall_at_1_fresh)
        print(
            f"  {name:<11}{fig.build_us_per_vector:>8.1f}{fig.p50_us:>9.1f}{fig.p99_us:>9.1f}"
            f"{'  '.join(f'{r:.3f}' for r in recalls):>25}"
            f"{fig.reported_bytes_per_vector:>8,.0f}{fig.rss_bytes_per_vector:>9,.0f}"
            f"{ratio(fig.p99_us, base.p99_us):>8}"
            f"{ratio(fig.reported_bytes_per_vector, base.reported_bytes_per_vector):>7}"
            f"  {fig.removal}"
        )


def recommendation(by_size: dict[int, dict[str, Figures]], cross: int | None) -> str:
    largest = by_size[max(by_size)]
    graphs = [name for name in ("usearch", "hnswlib", "faiss-hnsw") if name in largest]
    fastest = min(graphs, key=lambda name: largest[name].p99_us)
    ours = largest["usearch"]
    where = f"{cross:,}" if cross is not None else f"{EXACT_BELOW:,} (no crossover measured)"
    return (
        f"numpy brute force below {where} vectors per scope, usearch from there: at "
        f"{max(by_size):,} its p99 is {ours.p99_us / largest['numpy'].p99_us:.2f}x numpy's with "
        f"recall@1 {ours.recall_at_1:.3f}, and it removes vectors "
        f"(fastest graph here: {fastest}, {largest[fastest].p99_us:.0f} µs p99)"
    )


def print_sweep(points: list[dict[str, float]], cross: int | None) -> None:
    print("\ncrossover sweep (one numpy and one usearch scope grown together), p99 µs:")
    for point in points:
        print(
            f"  {point['size']:>7,.0f}  numpy {point['numpy_p99_us']:>9.1f}"
            f"  usearch {point['usearch_p99_us']:>9.1f}"
            f"  usearch/numpy {point['usearch_p99_us'] / point['numpy_p99_us']:.2f}x"
            f"   (p50 {point['numpy_p50_us']:.1f} vs {point['usearch_p50_us']:.1f})"
        )
    print(
        f"crossover: usearch p99 < numpy p99 from {cross} vectors on (EXACT_BELOW = {EXACT_BELOW})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="sizes 1k and 5k: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sizes = [1_000, 5_000] if args.quick else [int(size) for size in args.sizes.split(",")]
    n_queries, rounds = (300, 2) if args.quick else (args.queries, args.rounds)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    threads = {var: os.environ[var] for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    print(f"{n_queries:,} queries x {rounds} rounds; {threads}; {os.cpu_count()} cores\n{LEGEND}")
    by_size: dict[int, dict[str, Figures]] = {}
    for size in sizes:
        by_size[size] = measure_size(rng, size, n_queries, rounds)
        print_size(size, by_size[size])
        gc.collect()
    points = sweep(rng, SWEEP_QUICK if args.quick else SWEEP_FULL, min(n_queries, 1_000), rounds)
    cross = crossover(points)
    print_sweep(points, cross)
    print(f"recommendation: {recommendation(by_size, cross)}")
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json is not None:
        figures = {
            "sizes": {
                str(n): {k: asdict(f) for k, f in figs.items()} for n, figs in by_size.items()
            },
            "sweep": points,
            "crossover": cross,
            "exact_below": EXACT_BELOW,
            "dim": DIM,
            "queries": n_queries,
            "rounds": rounds,
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
