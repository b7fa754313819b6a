from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from overdrive.cli import main
from overdrive.demo._runner import run_phase
from overdrive.demo._workload import build_workload
from overdrive.monitor import Metrics
from overdrive.optimize._analyser import Sample, analyse, load_sample, save_run
from overdrive.testing import FakeClock

TUNABLES = {
    "upstream.a.concurrency": 16.0,
    "upstream.a.rpm": 600.0,
    "batching.embeddings.enabled": 1.0,
    "batching.embeddings.max_wait_ms": 5.0,
    "cache.ttl": 3600.0,
}


def record(
    metrics: Metrics,
    *,
    op: str = "chat",
    calls: int,
    queued_s: float,
    answer_s: float,
    coalesced: int = 0,
) -> None:
    """``calls`` upstream calls at ``a`` that each queued then answered, plus joiners."""
    for _ in range(calls):
        metrics.counter("overdrive_requests_total", op=op).inc()
        metrics.counter("overdrive_upstream_requests_total", upstream="a", op=op).inc()
        metrics.histogram("overdrive_queue_wait_seconds", upstream="a", op=op).observe(queued_s)
        metrics.histogram("overdrive_upstream_duration_seconds", upstream="a", op=op).observe(
            answer_s
        )
        metrics.histogram("overdrive_request_duration_seconds", op=op).observe(queued_s + answer_s)
    for _ in range(coalesced):
        metrics.counter("overdrive_requests_total", op=op).inc()
        metrics.counter("overdrive_coalesced_total", op=op).inc()
        metrics.histogram("overdrive_request_duration_seconds", op=op).observe(answer_s)


def sixty_seconds() -> tuple[Metrics, FakeClock]:
    clock = FakeClock()
    metrics = Metrics(clock)
    return metrics, clock


def test_queueing_at_the_rpm_limit_is_named_the_bottleneck() -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=600, queued_s=3.0, answer_s=0.5)  # 600 in 60 s: the 600 rpm limit
    clock.advance(60)
    found = analyse(metrics, {"tunables": TUNABLES}).bottleneck
    assert found is not None
    assert (found.name, found.tunable, found.suggested) == ("rate_limit", "upstream.a.rpm", 900.0)
    assert "86% of time queued behind deployment a's RPM limit" in found.summary
    assert found.severity == "critical"


def test_queueing_below_the_rate_limit_is_concurrency() -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=100, queued_s=2.0, answer_s=1.0)  # 100/min, far under 600 rpm
    clock.advance(60)
    found = analyse(metrics, {"tunables": TUNABLES, "in_flight": {"a": 16}}).bottleneck
    assert found is not None
    assert (found.name, found.tunable, found.suggested) == (
        "concurrency",
        "upstream.a.concurrency",
        32.0,
    )
    assert found.evidence["in_flight"] == 16.0


def test_repeats_without_a_cache_recommend_caching() -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=40, queued_s=0.0, answer_s=1.0, coalesced=60)
    clock.advance(60)
    tunables = {k: v for k, v in TUNABLES.items() if k != "cache.ttl"}  # cache off
    analysis = analyse(metrics, {"tunables": tunables})
    caching = next(f for f in analysis.findings if f.name == "caching")
    assert caching.summary.startswith("60% of chat calls repeat")
    assert caching.recommendation == "enable caching ([cache] in the config)"
    assert analysis.served_locally["coalesced"] == pytest.approx(0.6)


def test_single_text_embedding_calls_recommend_batching() -> None:
    metrics, clock = sixty_seconds()
    record(metrics, op="embeddings", calls=50, queued_s=0.0, answer_s=0.2)
    record(metrics, op="chat", calls=5, queued_s=0.0, answer_s=0.5)
    clock.advance(60)
    tunables = {**TUNABLES, "batching.embeddings.enabled": 0.0}
    found = analyse(metrics, {"tunables": tunables}).bottleneck
    assert found is not None
    assert found.name == "batching"
    assert (found.tunable, found.suggested) == ("batching.embeddings.enabled", 1.0)
    assert found.summary.startswith("embedding batch size p50 = 1")


def test_429s_and_retries_are_findings() -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=100, queued_s=0.0, answer_s=1.0)
    metrics.counter("overdrive_upstream_rate_limited_total", upstream="a").inc(20)
    metrics.counter("overdrive_retries_total", upstream="a").inc(10)
    clock.advance(60)
    names = [f.name for f in analyse(metrics, {"tunables": TUNABLES}).findings]
    assert names == ["upstream_latency", "rate_limited", "retries"]


def test_stages_split_wall_time_and_count_batched_requests_once_each() -> None:
    metrics, clock = sixty_seconds()
    # One upstream call of 1 s (0.5 s queued) served four requests batched together.
    record(metrics, op="embeddings", calls=1, queued_s=0.5, answer_s=0.5)
    for _ in range(3):
        metrics.counter("overdrive_requests_total", op="embeddings").inc()
        metrics.histogram("overdrive_request_duration_seconds", op="embeddings").observe(1.0)
    clock.advance(10)
    analysis = analyse(metrics)
    assert analysis.stages == pytest.approx({"queue": 0.5, "upstream": 0.5, "other": 0.0})
    assert analysis.wall_seconds == pytest.approx(4.0)


def test_an_idle_engine_has_no_bottleneck() -> None:
    analysis = analyse(Metrics(FakeClock()))
    assert analysis.bottleneck is None
    assert analysis.to_dict()["bottleneck"] is None


def test_a_snapshot_dict_analyses_like_the_registry() -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=600, queued_s=3.0, answer_s=0.5)
    clock.advance(60)
    snapshot = {**metrics.snapshot(), "seconds": 60.0}
    from_dict = analyse(snapshot, {"tunables": TUNABLES})
    assert from_dict.to_dict() == analyse(metrics, {"tunables": TUNABLES}).to_dict()


class FakeEngine:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def stats(self) -> dict[str, Any]:
        return {"tunables": TUNABLES, "in_flight": {"a": 3}, "waiting": {"a": None}}


def test_a_saved_run_reads_back_equal(tmp_path: Path) -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=10, queued_s=0.1, answer_s=0.2)
    clock.advance(30)
    path = save_run(FakeEngine(metrics), tmp_path / "run" / "last.json")
    assert path is not None
    assert load_sample(path) == Sample.from_metrics(metrics, FakeEngine(metrics).stats())


def test_report_prints_a_saved_run_as_json_and_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics, clock = sixty_seconds()
    record(metrics, calls=600, queued_s=3.0, answer_s=0.5)
    clock.advance(60)
    path = save_run(FakeEngine(metrics), tmp_path / "last.json")
    assert main(["report", "--file", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bottleneck"] == "rate_limit"
    assert main(["report", "--file", str(path)]) == 0
    assert "Bottleneck rate_limit" in capsys.readouterr().out


def test_report_without_a_saved_run_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--file", str(tmp_path / "none.json")]) == 2
    assert "run `overdrive demo` first" in capsys.readouterr().err


def test_after_the_demo_the_report_names_the_rate_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run_phase(build_workload(60), through_overdrive=True)
    assert main(["report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # The run is in real time: on a loaded machine, say what the analyser saw instead.
    assert report["bottleneck"] == "rate_limit", report["findings"][:2]
    assert report["findings"][0]["tunable"] == "upstream.sim.rpm"
