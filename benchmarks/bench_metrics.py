"""Cost of one observation in overdrive's metrics and in prometheus_client, in the same run.

    python benchmarks/bench_metrics.py [--ops 200000] [--rounds 5]

Each figure is the median over rounds of the mean time per call, minus the
cost of an empty loop, so it is the observation alone. Rows:

- counter inc: a held counter, plain (no windows) and with sliding windows;
- histogram observe: plain, with windows (what ``Metrics()`` gives), and the
  full registry path ``metrics.histogram(name, **labels).observe(x)``;
- measure: one ``with metrics.measure(...)`` block;
- prometheus_client Counter.inc and Histogram.observe (default buckets) as peers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

from overdrive.monitor import Counter, Histogram, Metrics

Op = Callable[[float], None]


def _per_call(op: Op, values: list[float]) -> float:
    started = time.perf_counter()
    for value in values:
        op(value)
    return (time.perf_counter() - started) / len(values)


def _noop(value: float) -> None:
    return None


def contenders() -> dict[str, Op]:
    windowed = Metrics()
    held_counter = windowed.counter("calls_total", op="chat")
    held_histogram = windowed.histogram("latency_seconds", op="chat")
    plain_counter, plain_histogram = Counter(), Histogram()
    registry = CollectorRegistry()
    prom_counter = PromCounter("calls", "calls", registry=registry)
    prom_histogram = PromHistogram("latency_seconds", "latency", registry=registry)

    def counter_inc(value: float) -> None:
        plain_counter.inc()

    def windowed_inc(value: float) -> None:
        held_counter.inc()

    def registry_observe(value: float) -> None:
        windowed.histogram("latency_seconds", op="chat").observe(value)

    def measure_block(value: float) -> None:
        with windowed.measure("block_seconds", op="chat"):
            pass

    def prom_inc(value: float) -> None:
        prom_counter.inc()

    return {
        "overdrive Counter.inc": counter_inc,
        "overdrive Counter.inc (windows)": windowed_inc,
        "prometheus_client Counter.inc": prom_inc,
        "overdrive Histogram.observe": plain_histogram.observe,
        "overdrive Histogram.observe (windows)": held_histogram.observe,
        "overdrive metrics.histogram(...).observe": registry_observe,
        "prometheus_client Histogram.observe": prom_histogram.observe,
        "overdrive with measure(...)": measure_block,
    }


def run(ops: int, rounds: int) -> dict[str, float]:
    rng = random.Random(1)
    values = [rng.lognormvariate(-3, 1) for _ in range(ops)]
    ops_by_name = contenders()
    samples: dict[str, list[float]] = {name: [] for name in ops_by_name}
    baseline: list[float] = []
    for _ in range(rounds):
        baseline.append(_per_call(_noop, values))
        for name, op in ops_by_name.items():
            samples[name].append(_per_call(op, values))
    empty = statistics.median(baseline)
    return {name: max(0.0, statistics.median(s) - empty) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = run(args.ops, args.rounds)
    peers = {
        "Counter": results["prometheus_client Counter.inc"],
        "Histogram": results["prometheus_client Histogram.observe"],
    }
    print(f"{'operation':44} {'ns/op':>8}  vs prometheus_client")
    for name, seconds in results.items():
        peer = peers["Counter"] if "Counter" in name else peers["Histogram"]
        print(f"{name:44} {seconds * 1e9:8.0f}  {seconds / peer:6.2f}x")


if __name__ == "__main__":
    main()
