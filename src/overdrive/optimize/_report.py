"""``overdrive report``'s text: the stages table, the tools table, the findings.

>>> from overdrive.optimize import analyse
>>> from overdrive.monitor import Metrics
>>> from rich.console import Console
>>> console = Console(width=100, color_system=None)
>>> with console.capture() as shown:
...     console.print(render(analyse(Metrics())))
>>> "No bottleneck" in shown.get()
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from ._analyser import Analysis

__all__ = ["render"]

_STAGE_NAMES = {
    "queue": "admission queue",
    "upstream": "upstream",
    "other": "batching, coalescing & overhead",
    "tool_queue": "tools: queued",
    "tool_running": "tools: running",
}


def render(analysis: Analysis) -> RenderableType:
    """The analysis as rich tables of stages (and tools, if any ran), then the findings."""
    from rich.console import Group

    tables: list[RenderableType] = [_stages_table(analysis)]
    if analysis.tools:
        tables.append(_tools_table(analysis))
    return Group(*tables, *_finding_lines(analysis))


def _stages_table(analysis: Analysis) -> Table:
    from rich.table import Table

    title = _title(analysis)
    stages = Table(title=title, min_width=len(title))  # a title wrapped over two lines reads badly
    stages.add_column("stage")
    stages.add_column("share of time", justify="right")
    for key, share in analysis.stages.items():
        stages.add_row(_STAGE_NAMES.get(key, key), f"{share:.0%}")
    local = analysis.served_locally
    semantic = f" (semantic {local['semantic']:.0%})" if "semantic" in local else ""
    stages.caption = (
        f"served locally: cache {local['cache']:.0%}{semantic}, coalesced {local['coalesced']:.0%}"
    )
    return stages


def _title(analysis: Analysis) -> str:
    if not analysis.tools:
        return (
            f"Where {analysis.requests:.0f} requests spent "
            f"{analysis.wall_seconds:.1f} request-seconds"
        )
    calls = sum(row["calls"] for row in analysis.tools.values())
    return (
        f"Where {analysis.requests:.0f} requests and {calls:.0f} tool calls spent "
        f"{analysis.wall_seconds:.1f} seconds"
    )


def _tools_table(analysis: Analysis) -> Table:
    from rich.table import Table

    tools = Table(title="Tools")
    for column in ("tool", "calls", "queued", "running", "p95 run", "errors", "reused"):
        tools.add_column(column, justify="left" if column == "tool" else "right")
    for name, row in analysis.tools.items():
        reused = row["cached"] + row["coalesced"]
        tools.add_row(
            name,
            f"{row['calls']:.0f}",
            f"{row['queue_share']:.0%}",
            f"{row['running_share']:.0%}",
            f"{row['p95_s']:.2f}s",
            f"{row['errors']:.0f} ({row['error_ratio']:.0%})",
            f"{reused:.0%}",
        )
    tools.caption = "queued, running: shares of all the time; errors: of attempts"
    return tools


def _finding_lines(analysis: Analysis) -> list[str]:
    if not analysis.findings:
        return ["No bottleneck: nothing explains a notable share of the time."]
    lines = []
    for rank, finding in enumerate(analysis.findings):
        label = "[bold]Bottleneck[/bold]" if rank == 0 else f"[dim]{finding.severity}[/dim]"
        knob = f" ([cyan]{finding.tunable}[/cyan]" if finding.tunable else ""
        if knob and finding.suggested is not None:
            knob += f" → {finding.suggested:g}"
        lines.append(
            f"{label} {finding.name}: {finding.summary}: "
            f"{finding.recommendation}{knob + ')' if knob else ''}"
        )
    return lines
