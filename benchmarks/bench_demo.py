"""The demo's agent workload, repeated: medians of plain vs overdrive, and their ratios.

python benchmarks/bench_demo.py [--runs 3] [--tasks 60]
"""

from __future__ import annotations

import argparse
import statistics

from overdrive.demo._runner import run_phase
from overdrive.demo._workload import build_workload


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=60)
    args = parser.parse_args()
    workload = build_workload(args.tasks)
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "overdrive": []}
    for run in range(args.runs):
        for name in rows:
            summary = run_phase(workload, through_overdrive=name == "overdrive").summary()
            rows[name].append(summary)
            print(
                f"run {run + 1} {name:<9} makespan {summary['makespan_s']:.2f} s, "
                f"upstream requests {summary['upstream_requests']}, "
                f"429s at client {summary['rate_limited']}"
            )
    for key in ("makespan_s", "p95_task_s", "upstream_requests", "rate_limited", "cost_usd"):
        plain = statistics.median(r[key] for r in rows["plain"])
        fast = statistics.median(r[key] for r in rows["overdrive"])
        ratio = f"{fast / plain:.2f}x" if plain else "n/a"
        print(f"median {key:<18} plain {plain:>10.3f}  overdrive {fast:>10.3f}  ratio {ratio}")


if __name__ == "__main__":
    main()
