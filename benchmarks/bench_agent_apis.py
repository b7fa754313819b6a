"""The demo's agent workload on each API family: overdrive vs the plain SDK, in one run.

    python benchmarks/bench_agent_apis.py [--tasks 60] [--rpm 1200] [--apis chat responses messages]

For each API the same tasks (``overdrive.demo``'s workload: plan, three
lookups at once, answer; Zipf-repeated prompts) run against a fresh
rate-limited sim twice: with the API's own SDK on its own (``openai`` for
chat and Responses, ``anthropic`` for Messages, default retries, the agent
waiting a second and trying again when the SDK gives up on a 429), and with
the same SDK on ``od.http_client()``. On chat a lookup is an embedding; on
Responses and Messages it is a forced call of a ``search_notes`` tool, so
every API makes five model calls per task.

Printed per API: makespan, upstream requests, 429s that reached the caller's
HTTP client, and plain / overdrive ratios.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from overdrive.demo import APIS, Api
from overdrive.demo._runner import DEMO_SIM, run_phase
from overdrive.demo._workload import Workload, build_workload
from overdrive.sim import SimConfig

# (summary key, label, format)
FIGURES = [
    ("makespan_s", "makespan", "{:.2f} s"),
    ("upstream_requests", "upstream requests", "{:,}"),
    ("rate_limited", "429s at the caller", "{:,}"),
]


def measure(api: Api, workload: Workload, sim: SimConfig) -> dict[str, dict[str, Any]]:
    """Both contenders on ``api``, plain first, each against a fresh sim."""
    return {
        name: run_phase(
            workload, through_overdrive=name == "overdrive", sim_config=sim, api=api
        ).summary()
        for name in ("plain", "overdrive")
    }


def ratio(plain: float, fast: float) -> str:
    """How many times less overdrive needed (plain / overdrive)."""
    if fast == 0:
        return "all gone" if plain else "="
    return f"{plain / fast:.1f}x"


def print_api(api: str, result: dict[str, dict[str, Any]]) -> None:
    plain, fast = result["plain"], result["overdrive"]
    print(f"\n{api}")
    print(f"  {'':<20}{'plain':>12}{'overdrive':>12}{'plain/od':>10}")
    for key, label, fmt in FIGURES:
        cells = fmt.format(plain[key]), fmt.format(fast[key]), ratio(plain[key], fast[key])
        print(f"  {label:<20}{cells[0]:>12}{cells[1]:>12}{cells[2]:>10}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--rpm", type=int, default=DEMO_SIM.rpm)
    parser.add_argument("--apis", nargs="+", choices=APIS, default=list(APIS))
    args = parser.parse_args()
    sim = replace(DEMO_SIM, rpm=args.rpm)
    workload = build_workload(args.tasks)
    print(f"{args.tasks} agent tasks, {workload.calls()} calls on each API; sim {sim.rpm} rpm")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for api in args.apis:
        results[api] = measure(api, workload, sim)
        print_api(api, results[api])
    speedups = (
        f"{api} {ratio(r['plain']['makespan_s'], r['overdrive']['makespan_s'])}"
        for api, r in results.items()
    )
    print("\nmakespan, plain / overdrive: " + ", ".join(speedups))


if __name__ == "__main__":
    main()
