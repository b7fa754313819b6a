"""The demo's side-by-side table."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["comparison_table"]

# (key, label, format, lower is better)
_ROWS: list[tuple[str, str, str, bool]] = [
    ("makespan_s", "makespan", "{:.2f} s", True),
    ("upstream_requests", "upstream requests", "{:,}", True),
    ("upstream_429s", "429s from the upstream", "{:,}", True),
    ("rate_limited", "429s reaching the agent's client", "{:,}", True),
    ("p50_task_s", "task latency p50", "{:.2f} s", True),
    ("p95_task_s", "task latency p95", "{:.2f} s", True),
    ("cache_hits", "answered from cache", "{:,}", False),
    ("coalesced", "merged into an identical call in flight", "{:,}", False),
    ("upstream_tokens", "tokens sent upstream", "{:,}", True),
    ("cost_usd", "estimated cost", "${:.4f}", True),
]


# How each API's run is named in the title: which SDK, which of its calls.
_TITLES = {
    "chat": "plain openai client",
    "responses": "plain openai client (Responses API)",
    "messages": "plain anthropic client (Messages API)",
}


def comparison_table(plain: dict[str, Any], fast: dict[str, Any], api: str = "chat") -> Table:
    table = Table(title=f"agent workload: {_TITLES[api]} vs through overdrive")
    table.add_column("")
    table.add_column("plain", justify="right")
    table.add_column("overdrive", justify="right")
    table.add_column("change", justify="right")
    for key, label, fmt, lower_better in _ROWS:
        table.add_row(
            label,
            fmt.format(plain[key]),
            fmt.format(fast[key]),
            _change(plain[key], fast[key], lower_better),
        )
    return table


def _change(before: float, after: float, lower_better: bool) -> str:
    if before == after:
        return "="
    if before and after and lower_better:
        return (
            f"[green]{before / after:.1f}x less[/]"
            if after < before
            else f"[red]{after / before:.1f}x more[/]"
        )
    better = after < before if lower_better else after > before
    colour = "green" if better else "red"
    return f"[{colour}]{after - before:+,.4g}[/]"
