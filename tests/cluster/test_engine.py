"""Two engines configured with one cluster URL: one asks the upstream, the other reads Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer
from tests.redis_server import RedisCluster as Cluster

from .util import keys_per_master


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as server:
        yield server


def config(sim: SimServer, url: str) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": ["m"], "rpm": 6000}
    return {"redis_url": url, "upstreams": [upstream], "cache": {"disk": None, "redis_url": url}}


async def test_an_answer_computed_by_one_engine_is_served_to_another(
    sim: SimServer, redis_cluster: Cluster, raw: RedisCluster
) -> None:
    sim.reset()
    questions = [[{"role": "user", "content": f"question {index}"}] for index in range(12)]
    async with Overdrive.from_config(config(sim, redis_cluster.url)) as first:
        asked = [await first.chat(model="m", messages=q, max_tokens=8) for q in questions]
        await first._cache.flush()
    async with Overdrive.from_config(config(sim, redis_cluster.url)) as second:
        served = [await second.chat(model="m", messages=q, max_tokens=8) for q in questions]
    chats = sim.stats()["requests"].get("/v1/chat/completions")
    assert chats == len(questions)  # the second engine sent none: every answer came from Redis
    assert [a["choices"] for a in asked] == [s["choices"] for s in served]
    per_master = await keys_per_master(raw)
    assert all(count > 0 for count in per_master.values()), per_master
