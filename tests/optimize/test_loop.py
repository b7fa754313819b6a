from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from overdrive import ConfigError, Overdrive, RequestError
from overdrive.monitor import Metrics
from overdrive.optimize import Analysis
from overdrive.optimize._findings import Finding
from overdrive.optimize._loop import Optimizer
from overdrive.optimize._policies import cache_off, safe_step
from overdrive.optimize._tunables import Tunable, Tunables
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream, pass_time

WINDOW = 10.0


class Rig:
    """A knob, a metrics registry to fill with finished requests, and scripted analyses."""

    def __init__(self, clock: FakeClock, *, advisory: bool = False, high: float = 64) -> None:
        self.clock = clock
        self.state = {"size": 4.0}
        self.knobs = Tunables(clock)
        self.knobs.add(
            Tunable("size", lambda: self.state["size"], self.write, 1, high, 2, integer=True)
        )
        self.metrics = Metrics(clock)
        self.findings: list[Finding] = [finding()]
        self.optimizer = Optimizer(
            tunables=self.knobs,
            metrics=self.metrics,
            analyse_fn=lambda seconds: analysis(*self.findings),
            clock=clock,
            window=WINDOW,
            cooldown=30.0,
            advisory=advisory,
        )

    def write(self, value: float) -> None:
        self.state["size"] = value

    def serve(self, requests: int, latency: float = 0.1) -> None:
        """``requests`` finish over the next window (at its end: the newest metrics slot)."""
        self.clock.advance(WINDOW)
        for _ in range(requests):
            self.metrics.histogram("overdrive_request_duration_seconds", op="chat").observe(latency)


def finding(tunable: str | None = "size", suggested: float | None = 64.0) -> Finding:
    return Finding("concurrency", "critical", 0.6, "60% queued", "raise it", {}, tunable, suggested)


def analysis(*findings: Finding, coalesced: float = 0.0) -> Analysis:
    return Analysis(WINDOW, 100, 50, {}, {"cache": 0.0, "coalesced": coalesced}, findings)


async def test_applies_one_safe_step_toward_the_suggestion(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.serve(100)
    decision = await rig.optimizer.step()
    assert decision is not None
    assert (decision.tunable, decision.old, decision.new) == ("size", 4, 8)  # x2, not 64
    assert rig.state["size"] == 8
    assert decision.outcome == "pending"
    assert rig.optimizer.pending is decision
    assert decision.before["throughput"] == pytest.approx(10.0)
    assert rig.knobs.history()[-1].reason == "60% queued"


async def test_keeps_a_change_that_raised_throughput(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.serve(100)
    first = await rig.optimizer.step()
    rig.serve(150)
    second = await rig.optimizer.step()
    assert first is not None
    assert first.outcome == "kept"
    assert first.after is not None
    assert first.after["throughput"] == pytest.approx(15.0)
    assert second is not None
    assert (second.old, second.new) == (8, 16)
    assert rig.metrics.value("overdrive_optimizer_decisions_total", outcome="kept") == 1


async def test_rolls_back_a_change_that_did_not_pay(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.serve(100)
    await rig.optimizer.step()
    rig.serve(101)  # +1%: noise, not a gain
    assert await rig.optimizer.step() is None  # no new change on a rolled-back baseline
    decision = rig.optimizer.decisions[-1]
    assert decision.outcome == "rolled_back"
    assert rig.state["size"] == 4
    assert [c.reason for c in rig.knobs.history()] == ["60% queued", "rollback"]


async def test_rolls_back_when_latency_grows_past_the_guard(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.serve(100, latency=0.1)
    await rig.optimizer.step()
    rig.serve(200, latency=1.0)  # twice the throughput, ten times the p95
    await rig.optimizer.step()
    assert rig.optimizer.decisions[-1].outcome == "rolled_back"


async def test_cool_down_then_a_smaller_step(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.serve(100)
    await rig.optimizer.step()
    rig.serve(90)
    await rig.optimizer.step()  # rolled back at t=20: cooling until t=50
    rig.serve(100)
    assert await rig.optimizer.step() is None  # t=30
    rig.serve(100)
    assert await rig.optimizer.step() is None  # t=40
    rig.serve(100)
    retry = await rig.optimizer.step()  # t=50
    assert retry is not None
    assert (retry.old, retry.new) == (4, 6)


async def test_never_beyond_the_bounds(clock: FakeClock) -> None:
    rig = Rig(clock, high=6)
    rig.serve(100)
    decision = await rig.optimizer.step()
    assert decision is not None
    assert decision.new == 6
    rig.serve(200)
    assert await rig.optimizer.step() is None  # at the ceiling: nothing left to try
    assert rig.state["size"] == 6


async def test_findings_without_a_tunable_change_nothing(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.findings = [finding(tunable=None), finding(tunable="unknown.knob")]
    rig.serve(100)
    assert await rig.optimizer.step() is None
    assert rig.knobs.history() == []


async def test_advisory_mode_recommends_and_changes_nothing(clock: FakeClock) -> None:
    rig = Rig(clock, advisory=True)
    for _ in range(5):
        rig.serve(100)
        await rig.optimizer.step()
    assert rig.state["size"] == 4
    assert rig.knobs.history() == []
    advised = rig.optimizer.decisions
    assert [d.outcome for d in advised] == ["advised", "advised"]  # once per cool-down
    assert not advised[0].applied
    assert advised[0].new == 8
    assert rig.metrics.value("overdrive_optimizer_decisions_total", outcome="advised") == 2


async def test_every_decision_is_logged_with_figures(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(clock)
    with caplog.at_level(logging.INFO, logger="overdrive.optimize"):
        rig.serve(100)
        await rig.optimizer.step()
        rig.serve(150)
        await rig.optimizer.step()
    assert any(
        "kept: size 4 -> 8" in r.message and "after throughput 15" in r.message
        for r in caplog.records
    )
    assert rig.optimizer.decisions[0].to_dict()["after"] == {"throughput": 15.0, "p95_s": 0.1}


async def test_runs_every_window_until_closed(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.optimizer.start()
    await asyncio.sleep(0)  # the loop starts waiting for its first window
    for _ in range(10):
        rig.metrics.histogram("overdrive_request_duration_seconds").observe(0.1)
    await clock.run_for(WINDOW, step=1.0)
    assert rig.state["size"] == 8
    await rig.optimizer.aclose()
    await clock.run_for(3 * WINDOW, step=1.0)
    assert rig.state["size"] == 8
    assert len(rig.optimizer.decisions) == 1
    assert "stopped" in repr(rig.optimizer)


def test_needs_something_to_tune() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        Optimizer()


def test_safe_steps_and_switches() -> None:
    knob = Tunable("c", lambda: 1, lambda v: None, low=1, high=64, step=2, integer=True)
    switch = Tunable("s", lambda: 0, lambda v: None, low=0, high=1, step=1, integer=True)
    assert safe_step(knob, 1, 2) == 2  # no further than suggested
    assert safe_step(knob, 1, 100) == 3  # a step of 2 beats x2 down here
    assert safe_step(knob, 32, 100) == 64
    assert safe_step(knob, 32, 1) == 16
    assert safe_step(switch, 0, 1) == 1


def test_cache_off_becomes_a_finding_when_requests_repeat(clock: FakeClock) -> None:
    state = {"on": 0.0}
    knobs = Tunables(clock)
    knobs.add(Tunable("cache.enabled", lambda: state["on"], lambda v: None, 0, 1, 1, True))
    found = cache_off(analysis(coalesced=0.3), knobs)
    assert found is not None
    assert (found.tunable, found.suggested) == ("cache.enabled", 1.0)
    assert cache_off(analysis(coalesced=0.01), knobs) is None
    state["on"] = 1.0
    assert cache_off(analysis(coalesced=0.3), knobs) is None


# -- on an engine ----------------------------------------------------------------


class SlowUpstream(FakeUpstream):
    """The fake upstream, answering after ``seconds`` of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__(clock)
        self.seconds = seconds

    async def answer(self, request: httpx.Request) -> httpx.Response:
        assert self.clock is not None
        await self.clock.sleep(self.seconds)
        return await super().answer(request)


@contextlib.asynccontextmanager
async def misconfigured(clock: FakeClock) -> AsyncIterator[Overdrive]:
    async with SlowUpstream(clock, 0.05) as upstream:
        config: dict[str, Any] = {
            "upstreams": [
                {
                    "name": "a",
                    "base_url": upstream.url,
                    "models": ["m", "e"],
                    "concurrency": 1,
                    "max_concurrency": 32,
                }
            ],
            "batching": {"embeddings": {"enabled": False}},
            "cache": {"enabled": False},
            "retry": {"attempts": 0},
        }
        async with Overdrive.from_config(config, clock=clock) as od:
            yield od


async def _workload(od: Overdrive, worker: int) -> None:
    for n in range(10_000):
        await od._clock.sleep(0.01)  # think time: a cache hit takes no fake time at all
        if worker % 2:
            await od.embed(f"text {worker}-{n}", model="e")
        else:
            await od.chat(model="m", messages=[{"role": "user", "content": f"q{n % 5}"}])


async def test_turns_up_concurrency_batching_and_cache_on_an_engine(clock: FakeClock) -> None:
    async with misconfigured(clock) as od:
        optimizer = od.optimize(window=WINDOW)
        assert od.optimizer is optimizer
        workers = [asyncio.ensure_future(_workload(od, w)) for w in range(16)]
        await pass_time(clock, 12 * WINDOW)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        kept = {d.tunable for d in optimizer.decisions if d.outcome == "kept"}
        tried = {d.tunable for d in optimizer.decisions}
        assert od.tunables["upstream.a.concurrency"].value >= 4
        assert {"upstream.a.concurrency", "cache.enabled"} <= kept
        # Batching is tried; on this fake (latency flat in batch size) it may not pay.
        assert "batching.embeddings.enabled" in tried
        assert all(d.before for d in optimizer.decisions)


async def test_advisory_on_an_engine_changes_nothing(clock: FakeClock) -> None:
    async with misconfigured(clock) as od:
        before = {name: knob.value for name, knob in od.tunables.items()}
        optimizer = od.optimize(window=WINDOW, advisory=True)
        workers = [asyncio.ensure_future(_workload(od, w)) for w in range(16)]
        await pass_time(clock, 4 * WINDOW)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        assert {name: knob.value for name, knob in od.tunables.items()} == before
        assert optimizer.decisions
        assert all(d.outcome == "advised" for d in optimizer.decisions)
        with pytest.raises(RequestError, match="disabled"):
            od.cached()
