"""`overdrive demo`: an agent workload, first plain, then through overdrive, side by side."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..sim import SimConfig
from ._report import comparison_table
from ._runner import DEMO_SIM, PhaseResult, run_phase
from ._workload import build_workload

__all__ = ["run_demo"]


def run_demo(
    *, tasks: int = 60, as_json: bool = False, sim_config: SimConfig = DEMO_SIM
) -> dict[str, Any]:
    """Run both phases; print a table (or one JSON line) and return the summaries."""
    workload = build_workload(tasks)
    if as_json:
        results = {
            name: _phase(workload, name, sim_config, lambda: None)
            for name in ("plain", "overdrive")
        }
    else:
        results = _with_progress(workload, sim_config)
    summary = {name: result.summary() for name, result in results.items()}
    if as_json:
        from .._json import dumps

        sys.stdout.write(dumps(summary).decode() + "\n")
    else:
        _print_table(summary, workload.calls(), len(workload.tasks))
    return summary


def _phase(workload: Any, name: str, sim_config: SimConfig, tick: Any) -> PhaseResult:
    return run_phase(
        workload, through_overdrive=name == "overdrive", sim_config=sim_config, on_task_done=tick
    )


def _with_progress(workload: Any, sim_config: SimConfig) -> dict[str, PhaseResult]:
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    results: dict[str, PhaseResult] = {}
    with Progress(*columns) as progress:
        for name in ("plain", "overdrive"):
            bar = progress.add_task(name, total=len(workload.tasks))
            results[name] = _phase(
                workload, name, sim_config, lambda bar=bar: progress.advance(bar)
            )
    return results


def _print_table(summary: dict[str, Any], calls: int, tasks: int) -> None:
    console = Console()
    console.print(comparison_table(summary["plain"], summary["overdrive"]))
    ratio = summary["overdrive"]["makespan_s"] / summary["plain"]["makespan_s"]
    console.print(
        f"{tasks} agent tasks, {calls} calls; "
        f"overdrive finished in {ratio:.0%} of the plain run's time."
    )
