"""`overdrive demo`: an agent workload, first plain, then through overdrive, side by side.

``api`` picks the API family the agents call: chat completions (and
embeddings) through the openai SDK, the Responses API through the openai
SDK, or Anthropic Messages through the anthropic SDK.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..sim import SimConfig
from ._clients import APIS, Api
from ._report import comparison_table
from ._runner import DEMO_SIM, PhaseResult, run_phase
from ._workload import Workload, build_workload

__all__ = ["APIS", "Api", "run_demo"]


def run_demo(
    *,
    tasks: int = 60,
    as_json: bool = False,
    sim_config: SimConfig = DEMO_SIM,
    api: Api = "chat",
) -> dict[str, Any]:
    """Run both phases on ``api``; print a table (or one JSON line) and return the summaries.

    >>> summary = run_demo(tasks=4, as_json=True, api="messages")  # doctest: +SKIP
    >>> summary["overdrive"]["rate_limited"]  # doctest: +SKIP
    0
    """
    if api not in APIS:
        raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
    workload = build_workload(tasks)
    if as_json:
        results = {
            name: _phase(workload, name, sim_config, api, lambda: None)
            for name in ("plain", "overdrive")
        }
    else:
        results = _with_progress(workload, sim_config, api)
    summary = {name: result.summary() for name, result in results.items()}
    if as_json:
        from .._json import dumps

        sys.stdout.write(dumps(summary).decode() + "\n")
    else:
        _print_table(summary, workload, api)
    return summary


def _phase(
    workload: Workload, name: str, sim_config: SimConfig, api: Api, tick: Callable[[], None]
) -> PhaseResult:
    return run_phase(
        workload,
        through_overdrive=name == "overdrive",
        sim_config=sim_config,
        on_task_done=tick,
        api=api,
    )


def _with_progress(workload: Workload, sim_config: SimConfig, api: Api) -> dict[str, PhaseResult]:
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
            results[name] = _phase(workload, name, sim_config, api, partial(progress.advance, bar))
    return results


def _print_table(summary: dict[str, Any], workload: Workload, api: Api) -> None:
    console = Console()
    console.print(comparison_table(summary["plain"], summary["overdrive"], api))
    ratio = summary["overdrive"]["makespan_s"] / summary["plain"]["makespan_s"]
    console.print(
        f"{len(workload.tasks)} agent tasks, {workload.calls()} calls; "
        f"overdrive finished in {ratio:.0%} of the plain run's time."
    )
