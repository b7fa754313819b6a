"""``overdrive top``: the dashboard's figures in the terminal, live (rich), for a gateway or a run.

Each frame is drawn from a :class:`~overdrive.dashboard.Snapshot` (the one
the page shows); rates are the difference of the last two snapshots over the
time between them, so the first frame of a live view, and a saved run, show
totals only.

>>> from overdrive.dashboard import Source, snapshot
>>> from overdrive.monitor import Metrics
>>> metrics = Metrics()
>>> metrics.counter("overdrive_requests_total", op="chat").inc(3)
>>> import io
>>> console = Console(width=100, record=True, file=io.StringIO())
>>> console.print(frame(snapshot(Source(metrics, {}))))
>>> "requests 3" in console.export_text()
True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._json import JSONDecodeError, loads
from .dashboard import SNAPSHOT_PATH, Snapshot

__all__ = ["TopSourceError", "fetch_url", "frame", "operator_get", "read_file", "run_top"]

# Rows of a table shown at most: a terminal is short.
_ROWS = 12


class TopSourceError(Exception):
    """Figures that cannot be read (a gateway that does not answer, a bad file): one line."""


# -- where the figures come from --------------------------------------------------------


def operator_get(url: str, path: str, key_env: str | None, timeout: float = 10.0) -> bytes:
    """The body of an operator route (``/dashboard/snapshot``, a report) of the gateway at ``url``.

    ``key_env`` names the variable holding a gateway key, for a gateway with keys.
    """
    import httpx

    headers = {}
    if key_env:
        key = os.environ.get(key_env)
        if not key:
            raise TopSourceError(f"--key-env {key_env} is not set")
        headers["authorization"] = f"Bearer {key}"
    target = url.rstrip("/") + path
    try:
        answer = httpx.get(target, headers=headers, timeout=timeout)
    except (httpx.HTTPError, ValueError) as exc:
        raise TopSourceError(f"cannot reach {target}: {type(exc).__name__}: {exc}") from None
    if answer.status_code != 200:
        reason = answer.text[:200].strip()
        raise TopSourceError(f"{target} answered {answer.status_code}: {reason}")
    return answer.content


def fetch_url(url: str, key_env: str | None = None) -> Callable[[], Snapshot]:
    """A reader of the gateway's (or ``od.dashboard()``'s) current snapshot."""

    def fetch() -> Snapshot:
        return _snapshot_of(operator_get(url, SNAPSHOT_PATH, key_env), url)

    return fetch


def read_file(path: str | Path) -> Snapshot:
    """The snapshot a run saved with ``od.save_run(path)`` holds."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TopSourceError(f"no run saved at {path}") from None
    except OSError as exc:
        raise TopSourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        parsed = loads(data)
    except JSONDecodeError:
        raise TopSourceError(f"{path} is not JSON: not a saved run") from None
    shot = parsed.get("snapshot") if isinstance(parsed, dict) else None
    if not isinstance(shot, dict):
        raise TopSourceError(f"{path} holds no snapshot (saved by an older overdrive?)")
    return _checked(shot, str(path))


def _snapshot_of(body: bytes, where: str) -> Snapshot:
    try:
        parsed = loads(body)
    except JSONDecodeError:
        raise TopSourceError(f"{where} sent a snapshot that is not JSON") from None
    if not isinstance(parsed, dict):
        raise TopSourceError(f"{where} sent no snapshot")
    return _checked(parsed, where)


def _checked(shot: dict[str, Any], where: str) -> Snapshot:
    missing = [k for k in ("totals", "latency", "upstreams", "stages") if k not in shot]
    if missing:
        raise TopSourceError(f"{where}: not a snapshot (no {', '.join(missing)})")
    # Its main keys are there; the panels read the rest with defaults.
    return cast("Snapshot", shot)


# -- drawing -------------------------------------------------------------------------


def frame(current: Snapshot, previous: Snapshot | None = None) -> RenderableType:
    """One screen: headline figures, stages, latency, upstreams, keys, alerts, decisions."""
    parts: list[RenderableType] = [_headline(current, previous), _stages(current)]
    parts += [_latency(current), _upstreams(current)]
    parts += [t for t in (_keys(current), _alerts(current), _decisions(current)) if t is not None]
    return Group(*parts)


def _rate(current: Snapshot, previous: Snapshot | None, total: str) -> str:
    if previous is None:
        return ""
    seconds = current["at"] - previous["at"]
    if seconds <= 0:
        return ""
    now: Any = current["totals"]
    then: Any = previous["totals"]
    delta = float(now.get(total, 0.0)) - float(then.get(total, 0.0))
    return f" ({delta / seconds:,.1f}/s)"


def _headline(current: Snapshot, previous: Snapshot | None) -> Text:
    t, ratio = current["totals"], current["hit_ratio"]
    tokens = t["prompt_tokens"] + t["completion_tokens"]
    semantic = ratio.get("semantic")
    parts = [
        f"requests {t['requests']:,.0f}{_rate(current, previous, 'requests')}",
        f"tokens {tokens:,.0f}",
        f"cost ${t['cost_usd']:,.4f}",
        f"hits {_share(ratio.get('exact'))} exact, {_share(ratio.get('coalesced'))} joined"
        + (f", {_share(semantic)} semantic" if semantic is not None else ""),
        f"429s {t['rate_limited']:,.0f}",
        f"retries {t['retries']:,.0f}",
    ]
    stamp = time.strftime("%H:%M:%S", time.localtime(current["wall"]))
    return Text(f"overdrive top  {stamp}\n" + "   ".join(parts), style="bold")


def _stages(current: Snapshot) -> Table:
    stages = current["stages"]
    total = sum(stages.get(k, 0.0) for k in ("queue", "upstream", "semantic", "other")) or 1.0
    table = Table(title="where the time goes (s)", title_justify="left", expand=False)
    for name in stages:
        table.add_column(name, justify="right")
    table.add_row(*(_stage_cell(name, v, total) for name, v in stages.items()))
    return table


def _stage_cell(name: str, seconds: float, total: float) -> str:
    if name.startswith("tool"):
        return f"{seconds:,.2f}"
    return f"{seconds:,.2f} ({seconds / total:.0%})"


def _latency(current: Snapshot) -> Table:
    table = Table(title="latency", title_justify="left")
    for column in ("of", "name", "count", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column in ("of", "name") else "right")
    groups = current["latency"]
    for group, label in (("by_op", "op"), ("by_upstream", "upstream"), ("by_model", "model")):
        for row in list(groups.get(group, []))[:_ROWS]:
            table.add_row(label, row["name"], f"{row['count']:,}", *_ms(row))
    return table


def _ms(row: Any) -> list[str]:
    return [f"{float(row[k]) * 1000:,.1f} ms" for k in ("p50", "p95", "p99", "max")]


def _upstreams(current: Snapshot) -> Table:
    table = Table(title="upstreams", title_justify="left")
    columns = ("name", "state", "requests", "429s", "retries", "errors", "in flight", "waiting")
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "state") else "right")
    for u in list(current["upstreams"])[:_ROWS]:
        figures = (u["requests"], u["rate_limited"], u["retries"], u["errors"])
        table.add_row(
            u["name"],
            u["state"],
            *_counts(figures),
            *_counts((u["in_flight"], u["waiting"])),
        )
    return table


def _counts(values: Iterable[float]) -> list[str]:
    return [f"{v:,.0f}" for v in values]


def _keys(current: Snapshot) -> Table | None:
    rows = list(current.get("keys", []))
    if not rows:
        return None
    table = Table(title="keys", title_justify="left")
    for column in ("key", "requests", "errors", "spend"):
        table.add_column(column, justify="left" if column == "key" else "right")
    for k in rows[:_ROWS]:
        spend = "-" if k["cost_usd"] is None else f"${k['cost_usd']:,.4f}"
        table.add_row(k["key"] or "(none)", *_counts((k["requests"], k["errors"])), spend)
    return table


def _alerts(current: Snapshot) -> Table | None:
    firing = [a for a in current.get("alerts", []) if a.get("state") in ("firing", "pending")]
    if not firing:
        return None
    table = Table(title="alerts", title_justify="left")
    for column in ("state", "rule", "labels", "value"):
        table.add_column(column)
    for a in firing[:_ROWS]:
        labels = a.get("labels") or {}
        shown = ",".join(f"{k}={v}" for k, v in sorted(dict(labels).items()))
        value = a.get("value")
        table.add_row(str(a["state"]), str(a.get("rule", "")), shown, _number(value))
    return table


def _decisions(current: Snapshot) -> Table | None:
    rows = list(current.get("decisions", []))
    if not rows:
        return None
    table = Table(title="optimizer decisions (newest first)", title_justify="left")
    for column in ("tunable", "change", "outcome", "reason"):
        table.add_column(column)
    for d in rows[:5]:
        change = f"{d['old']:g} -> {d['new']:g}"
        table.add_row(d["tunable"], change, d["outcome"], d["reason"][:60])
    return table


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


# -- the loop ---------------------------------------------------------------------------


def run_top(
    fetch: Callable[[], Snapshot],
    *,
    interval: float = 1.0,
    frames: int | None = None,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Draw a frame per ``interval`` s until interrupted (or ``frames`` were drawn)."""
    console = console or Console()
    previous: Snapshot | None = None
    drawn = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while frames is None or drawn < frames:
            current = fetch()
            live.update(frame(current, previous), refresh=True)
            previous, drawn = current, drawn + 1
            if frames is None or drawn < frames:
                sleep(interval)
