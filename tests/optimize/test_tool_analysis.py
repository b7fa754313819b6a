"""Tools in the analysis: their queue and running time, their findings, the report's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from overdrive.cli import main
from overdrive.monitor import Metrics
from overdrive.optimize._analyser import Sample, analyse, load_sample, save_run
from overdrive.testing import FakeClock
from tests.optimize.test_analyser import TUNABLES, record

TOOL_KNOBS = {**TUNABLES, "tool.search.concurrency": 2.0, "tool.search.rpm": 600.0}


def record_tool(
    metrics: Metrics,
    name: str = "search",
    *,
    calls: int,
    queued_s: float,
    run_s: float,
    failed: int = 0,
    retried: int = 0,
    outcome: str = "ok",
) -> None:
    """``calls`` tool calls of one attempt each that queued then ran; ``failed`` of them raised."""
    for n in range(calls):
        metrics.histogram("overdrive_tool_queue_seconds", tool=name).observe(queued_s)
        metrics.histogram("overdrive_tool_duration_seconds", tool=name).observe(run_s)
        error = n < failed
        if error:
            metrics.counter("overdrive_tool_errors_total", tool=name, error="TimeoutError").inc()
        metrics.counter(
            "overdrive_tool_calls_total", tool=name, outcome="error" if error else outcome
        ).inc()
    if retried:
        metrics.counter("overdrive_tool_retries_total", tool=name).inc(retried)


def registry() -> tuple[Metrics, FakeClock]:
    clock = FakeClock()
    return Metrics(clock), clock


def test_tool_time_is_split_into_queue_and_running_beside_the_models() -> None:
    metrics, clock = registry()
    record(metrics, calls=10, queued_s=1.0, answer_s=1.0)  # models: 10 s queued, 10 s upstream
    record_tool(metrics, calls=10, queued_s=2.0, run_s=4.0)  # the tool: 20 s queued, 40 s running
    clock.advance(60)
    analysis = analyse(metrics, {"tunables": TOOL_KNOBS})
    assert analysis.wall_seconds == pytest.approx(80.0)
    assert analysis.stages == pytest.approx(
        {"queue": 0.125, "upstream": 0.125, "other": 0.0, "tool_queue": 0.25, "tool_running": 0.5}
    )
    row = analysis.tools["search"]
    assert (row["calls"], row["attempts"]) == (10.0, 10.0)
    assert (row["queue_share"], row["running_share"]) == pytest.approx((0.25, 0.5))
    assert row["p95_s"] == pytest.approx(4.0, rel=0.05)
    assert (row["errors"], row["error_ratio"], row["retries"]) == (0.0, 0.0, 0.0)
    assert analysis.to_dict()["tools"]["search"]["running_share"] == 0.5


def test_a_tool_queued_below_its_rpm_is_the_bottleneck_and_names_its_concurrency() -> None:
    metrics, clock = registry()
    record(metrics, calls=10, queued_s=0.0, answer_s=1.0)  # 10 model-seconds
    record_tool(metrics, calls=60, queued_s=3.0, run_s=1.0)  # 60/min, far below 600 rpm
    clock.advance(60)
    found = analyse(metrics, {"tunables": TOOL_KNOBS}).bottleneck
    assert found is not None
    assert (found.name, found.tunable, found.suggested) == (
        "tool_concurrency",
        "tool.search.concurrency",
        4.0,
    )
    assert found.explains == pytest.approx(180 / 250)
    assert "queued for one of tool search's 2 concurrency slots" in found.summary
    assert found.severity == "critical"


def test_a_tool_at_its_rpm_is_a_rate_limit_with_no_knob_past_the_given_rpm() -> None:
    metrics, clock = registry()
    record_tool(metrics, calls=60, queued_s=3.0, run_s=1.0)  # 60 calls in 60 s: at 60 rpm
    clock.advance(60)
    knobs = {**TOOL_KNOBS, "tool.search.rpm": 60.0}
    found = analyse(metrics, {"tunables": knobs}).bottleneck
    assert found is not None
    assert found.name == "tool_rate_limit"
    assert (found.tunable, found.suggested) == (None, None)
    assert found.recommendation == (
        "raise the tool's rpm (if its provider allows) or cache its answers"
    )
    assert "75% of time queued behind tool search's rpm limit (60 of 60 calls/min" in found.summary


def test_a_slow_tool_is_named_where_the_time_goes() -> None:
    metrics, clock = registry()
    record(metrics, calls=10, queued_s=0.0, answer_s=0.5)  # 5 model-seconds
    record_tool(metrics, "crawl", calls=5, queued_s=0.0, run_s=9.0)  # 45 tool-seconds
    clock.advance(60)
    analysis = analyse(metrics, {"tunables": TUNABLES})
    found = analysis.bottleneck
    assert found is not None
    assert (found.name, found.tunable) == ("tool_latency", None)
    assert found.explains == pytest.approx(0.9)
    assert found.summary.startswith("90% of time is tool crawl running (p50 ")
    assert [f.name for f in analysis.findings] == ["tool_latency", "upstream_latency"]


def test_the_model_stays_the_bottleneck_when_it_is() -> None:
    metrics, clock = registry()
    record(metrics, calls=600, queued_s=3.0, answer_s=0.5)  # the model's rpm limit: 2100 s
    record_tool(metrics, calls=20, queued_s=0.0, run_s=0.5)  # 10 tool-seconds
    clock.advance(60)
    analysis = analyse(metrics, {"tunables": TOOL_KNOBS})
    assert analysis.bottleneck is not None
    assert analysis.bottleneck.name == "rate_limit"
    assert not [f for f in analysis.findings if f.name.startswith("tool_")]
    assert analysis.tools["search"]["running_share"] == pytest.approx(10 / 2110)


def test_failing_tool_attempts_are_a_finding() -> None:
    metrics, clock = registry()
    record_tool(metrics, calls=20, queued_s=0.0, run_s=1.0, failed=5, retried=4)
    clock.advance(60)
    analysis = analyse(metrics, {"tunables": TOOL_KNOBS})
    errors = next(f for f in analysis.findings if f.name == "tool_errors")
    assert errors.summary == "25% of tool search's attempts failed (mostly TimeoutError), 4 retried"
    assert errors.explains == pytest.approx(0.25)  # a quarter of the tool's (all the) time
    assert analysis.tools["search"]["error_ratio"] == pytest.approx(0.25)
    assert analysis.tools["search"]["retries"] == 4.0


def test_cached_and_coalesced_tool_calls_show_in_the_breakdown() -> None:
    metrics, clock = registry()
    record_tool(metrics, calls=4, queued_s=0.0, run_s=1.0)
    metrics.counter("overdrive_tool_calls_total", tool="search", outcome="cached").inc(4)
    metrics.counter("overdrive_tool_calls_total", tool="search", outcome="coalesced").inc(2)
    clock.advance(60)
    row = analyse(metrics).tools["search"]
    assert (row["calls"], row["cached"], row["coalesced"]) == (10.0, 0.4, 0.2)


def test_a_run_without_tools_reads_as_before() -> None:
    metrics, clock = registry()
    record(metrics, calls=600, queued_s=3.0, answer_s=0.5)
    clock.advance(60)
    analysis = analyse(metrics, {"tunables": TUNABLES})
    assert set(analysis.stages) == {"queue", "upstream", "other"}
    assert analysis.stages == pytest.approx({"queue": 3 / 3.5, "upstream": 0.5 / 3.5, "other": 0})
    assert analysis.tools == {}
    assert "tools" not in analysis.to_dict()
    assert analysis.wall_seconds == pytest.approx(2100.0)
    assert [f.name for f in analysis.findings] == ["rate_limit", "upstream_latency"]


class ToolEngine:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def stats(self) -> dict[str, Any]:
        return {"tunables": TOOL_KNOBS}


def test_tool_metrics_survive_a_saved_run(tmp_path: Path) -> None:
    metrics, clock = registry()
    record_tool(metrics, calls=10, queued_s=2.0, run_s=4.0, failed=1, retried=1)
    clock.advance(60)
    path = save_run(ToolEngine(metrics), tmp_path / "last.json")
    assert path is not None
    sample = load_sample(path)
    assert sample == Sample.from_metrics(metrics, ToolEngine(metrics).stats())
    assert sample.dist("overdrive_tool_queue_seconds", tool="search").sum == pytest.approx(20.0)
    assert sample.total("overdrive_tool_errors_total", tool="search") == 1.0
    assert analyse(sample).tools == analyse(metrics, ToolEngine(metrics).stats()).tools


def test_report_shows_a_tools_table_beside_the_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapped titles
    metrics, clock = registry()
    record(metrics, calls=10, queued_s=0.0, answer_s=1.0)
    record_tool(metrics, calls=60, queued_s=3.0, run_s=1.0, failed=6)
    clock.advance(60)
    path = save_run(ToolEngine(metrics), tmp_path / "last.json")
    assert main(["report", "--file", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bottleneck"] == "tool_concurrency"
    assert report["tools"]["search"]["calls"] == 60.0
    assert main(["report", "--file", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Where 10 requests and 60 tool calls spent 250.0 seconds" in text
    assert "tools: queued" in text
    assert "Tools" in text
    search_row = next(line for line in text.splitlines() if "search" in line and "│" in line)
    cells = [cell.strip() for cell in search_row.split("│")[1:8]]
    assert cells == ["search", "60", "72%", "24%", "1.00s", "6 (10%)", "0%"]
    assert "Bottleneck tool_concurrency" in text


def test_report_without_tools_has_no_tools_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics, clock = registry()
    record(metrics, calls=10, queued_s=0.0, answer_s=1.0)
    clock.advance(60)
    path = save_run(ToolEngine(metrics), tmp_path / "last.json")
    assert main(["report", "--file", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Tools" not in text
    assert "Where 10 requests spent 10.0 request-seconds" in text
