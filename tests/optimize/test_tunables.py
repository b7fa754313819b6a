from __future__ import annotations

import asyncio
from typing import Any

import pytest

from overdrive import ConfigError, Overdrive
from overdrive.flow import AdaptiveLimit, FixedLimit
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream


def build(clock: FakeClock, **upstream: Any) -> Overdrive:
    """An engine for reading and setting knobs: it sends nothing, so it needs no upstream."""
    config = {
        "upstreams": [
            {"name": "a", "base_url": "http://a.test/v1", "models": ["m", "e"], **upstream}
        ],
        "batching": {"embeddings": {"max_batch": 16, "max_wait_ms": 5}},
    }
    return Overdrive.from_config(config, clock=clock)


async def test_every_knob_is_listed_with_bounds(clock: FakeClock) -> None:
    async with build(clock, rpm=600, tpm=90_000, model_limits={"e": {"rpm": 3000}}) as od:
        snapshot = od.tunables.snapshot()
    assert set(snapshot) == {
        "upstream.a.concurrency",
        "upstream.a.rpm",
        "upstream.a.tpm",
        "upstream.a/e.rpm",
        "batching.embeddings.enabled",
        "batching.embeddings.max_batch",
        "batching.embeddings.max_wait_ms",
        "cache.enabled",
        "cache.ttl",
    }
    assert snapshot["upstream.a.rpm"]["high"] == 600
    assert snapshot["upstream.a/e.rpm"]["value"] == 3000
    assert snapshot["batching.embeddings.max_wait_ms"]["value"] == pytest.approx(5.0)


async def test_setting_a_rate_changes_the_pacing(clock: FakeClock) -> None:
    async with build(clock, rpm=600, burst=0.1) as od:
        change = await od.tunables.set("upstream.a.rpm", 60, reason="test")
        assert (change.old, change.new, change.reason) == (600, 60, "test")
        limiter = od.upstreams()[0].queue("m").limiter
        assert limiter.spec.rpm == 60
        assert await limiter.try_acquire(1, 0) == 0.0
        assert await limiter.try_acquire(1, 0) == pytest.approx(1.0)


async def test_a_rate_cannot_exceed_what_was_configured(clock: FakeClock) -> None:
    async with build(clock, rpm=600) as od:
        with pytest.raises(ConfigError, match=r"upstream\.a\.rpm.*\[1, 600\]"):
            await od.tunables.set("upstream.a.rpm", 601)
        assert od.tunables["upstream.a.rpm"].value == 600
        assert od.tunables.history() == []


async def test_concurrency_knob_moves_fixed_and_adaptive_limits(clock: FakeClock) -> None:
    async with build(clock, concurrency=4, max_concurrency=32) as od:
        limit = od.upstreams()[0].concurrency
        assert isinstance(limit, FixedLimit)
        await od.tunables.set("upstream.a.concurrency", 9)
        assert limit.limit == 9
        with pytest.raises(ConfigError, match="whole number"):
            await od.tunables.set("upstream.a.concurrency", 2.5)
    async with build(clock) as od:
        adaptive = od.upstreams()[0].concurrency
        assert isinstance(adaptive, AdaptiveLimit)
        await od.tunables.set("upstream.a.concurrency", 40)
        assert adaptive.limit == 40


async def test_batching_knobs_reach_the_batcher(clock: FakeClock) -> None:
    batching = {"embeddings": {"max_batch": 64, "max_wait_ms": 1000}}
    async with FakeUpstream(clock) as fake, sending(fake, clock, ["e"], batching=batching) as od:
        await od.tunables.set("batching.embeddings.max_batch", 3)
        calls = [asyncio.create_task(od.embed(f"t{i}", model="e")) for i in range(6)]
        await fake.received(2)  # two full batches of 3: the clock stands, so no 1 s timer ran
        assert len(fake.calls) == 2
        await asyncio.gather(*calls)
        await od.tunables.set("batching.embeddings.enabled", 0)
        await od.embed("alone", model="e")
        assert fake.calls[-1][2]["input"] == "alone"


async def test_cache_ttl_knob_sets_new_entries_ttl(clock: FakeClock) -> None:
    async with FakeUpstream(clock) as fake, sending(fake, clock, ["m"]) as od:
        await od.tunables.set("cache.ttl", 10)
        messages = [{"role": "user", "content": "hi"}]
        await od.chat(model="m", messages=messages)
        clock.advance(12)  # past 10 s (jitter only shortens it)
        await od.chat(model="m", messages=messages)
    assert len(fake.calls) == 2


def sending(fake: FakeUpstream, clock: FakeClock, models: list[str], **sections: Any) -> Overdrive:
    """An engine whose upstream "a" is ``fake``."""
    upstream = {"name": "a", "base_url": fake.url, "models": models}
    return Overdrive.from_config({"upstreams": [upstream], **sections}, clock=clock)


async def test_unknown_tunable_names_the_known_ones(clock: FakeClock) -> None:
    async with build(clock) as od:
        assert "nope" not in od.tunables
        with pytest.raises(ConfigError, match=r"no such tunable \(known: .*cache\.ttl"):
            await od.tunables.set("nope", 1)
