"""The engine builds ``[alerts]`` over its own metrics, runs them on its clock, reports them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock
from tests.fakes import finish, pass_time

CHAT = "gpt-4o-mini"
EMBED = "text-embedding-3-small"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(seed=3, ttft_s=0.0, per_token_s=0.0, embed_base_s=0.0, jitter=0.0)
    with SimServer(config) as server:
        yield server


def config(sim: SimServer, **alerts: Any) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT, EMBED], "rpm": 60000}
    return {"upstreams": [upstream], "retry": {"base": "10ms"}, "alerts": alerts}


BUSY = {"name": "busy", "rule": "overdrive_requests_total >= 3", "for": "30s", "severity": "page"}


async def test_rules_from_config_judge_the_engines_calls_per_op(
    sim: SimServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="overdrive.alerts")
    async with Overdrive.from_config(config(sim, interval="5s", rules=[BUSY]), clock=clock) as od:
        assert od.alerts is not None
        assert od.alerts.running
        for i in range(3):
            await finish(clock, od.chat(model=CHAT, messages=[{"role": "user", "content": f"{i}"}]))
        await finish(clock, od.embed("one line", model=EMBED))
        assert clock.now() < 5  # the calls took less than one interval of fake time
        await pass_time(clock, 5)
        states = {row["series"]: row["state"] for row in od.stats()["alerts"]}
        assert states == {'{op="chat"}': "pending", '{op="embeddings"}': "inactive"}
        # Pending since the pass at ~5 s: `for 30s` is met by the pass at 40 s (the one at
        # 35 s falls a 10 ms clock step short).
        await pass_time(clock, 36)
        [chat] = [row for row in od.stats()["alerts"] if row["labels"] == {"op": "chat"}]
        assert (chat["rule"], chat["state"], chat["value"], chat["severity"]) == (
            "busy",
            "firing",
            3,
            "page",
        )
        assert set(chat) >= {"rule", "labels", "state", "value", "since"}
    assert not od.alerts.running  # closed with the engine
    [fired] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert fired.getMessage().startswith('[FIRING] busy{op="chat"}:')


async def test_without_rules_there_are_no_alerts(sim: SimServer, clock: FakeClock) -> None:
    async with Overdrive.from_config(config(sim, interval="5s"), clock=clock) as od:
        assert od.alerts is None
        assert od.stats()["alerts"] == []


def test_an_engine_made_outside_a_loop_starts_them_on_each_loop_it_runs_on(sim: SimServer) -> None:
    od = Overdrive.from_config(config(sim, rules=[BUSY]), clock=FakeClock())
    alerts = od.alerts
    assert alerts is not None
    assert not alerts.running
    hello = [{"role": "user", "content": "hello"}]

    async def first() -> bool:
        await od.__aenter__()  # `async with od:` starts them, here without the closing
        await od.chat(model=CHAT, messages=hello)  # the engine's home is this loop
        return alerts.running

    assert asyncio.run(first())
    assert not alerts.running  # cancelled with its loop

    async def second() -> bool:  # a call from a new loop moves the engine, alerts too
        await od.chat(model=CHAT, messages=hello)
        running = alerts.running
        await od.aclose()
        return running

    assert asyncio.run(second())
    assert not alerts.running


def test_the_first_call_on_a_loop_starts_them_without_async_with(sim: SimServer) -> None:
    od = Overdrive.from_config(config(sim, rules=[BUSY]), clock=FakeClock())
    alerts = od.alerts
    assert alerts is not None

    async def only_calls() -> bool:
        await od.chat(model=CHAT, messages=[{"role": "user", "content": "first use"}])
        running = alerts.running
        await od.aclose()
        return running

    assert not alerts.running
    assert asyncio.run(only_calls())


def test_the_sync_client_starts_them_on_the_engines_own_loop(sim: SimServer) -> None:
    import openai

    od = Overdrive.from_config(config(sim, rules=[BUSY]), clock=FakeClock())
    alerts = od.alerts
    assert alerts is not None
    client = openai.OpenAI(api_key="unused", http_client=od.http_client(sync=True))
    client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "sync"}])
    try:
        assert alerts.running
    finally:
        client.close()
        od.close()
    assert not alerts.running
