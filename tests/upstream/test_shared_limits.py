"""Two engines (as two processes or gateway replicas would) share one limit through Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from overdrive import Overdrive
from overdrive.flow import LocalLimiter, RedisLimiter
from overdrive.sim import SimConfig, SimServer
from tests.redis_server import RedisServer

CHAT = "gpt-sim"


def engine_config(base_url: str, redis_url: str | None) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": base_url, "models": [CHAT], "rpm": 1200,
                "burst": 0.25}  # fmt: skip
    return {"upstreams": [upstream], "cache": {"enabled": False}, "redis_url": redis_url}


async def run_both(configs: list[dict[str, Any]], calls_each: int) -> float:
    async with Overdrive.from_config(configs[0]) as one, Overdrive.from_config(configs[1]) as two:
        started = time.monotonic()
        await asyncio.gather(
            *(
                engine.chat(model=CHAT, messages=[{"role": "user", "content": f"{n}-{i}"}])
                for n, engine in enumerate((one, two))
                for i in range(calls_each)
            )
        )
        return time.monotonic() - started


async def test_two_engines_hold_one_limit_through_redis(redis_server: RedisServer) -> None:
    sim_config = SimConfig(seed=3, ttft_s=0.0, per_token_s=0.0, rpm=1200, burst_s=0.5)
    with SimServer(sim_config) as sim:
        config = engine_config(sim.base_url, redis_server.url)
        elapsed = await run_both([config, config], calls_each=30)
        stats = sim.stats()
    # 60 calls at 20/s after a 5-call burst cannot take less than 2.75 s when shared.
    assert elapsed >= 2.5
    assert stats["rate_limited"] == 0
    assert stats["requests"]["/v1/chat/completions"] == 60


async def test_shared_limits_use_redis_and_can_be_turned_off(redis_server: RedisServer) -> None:
    config = engine_config("http://sim.test/v1", redis_server.url)
    async with Overdrive.from_config(config) as shared:
        assert isinstance(shared.upstreams()[0].queue(CHAT).limiter, RedisLimiter)
    config["upstreams"][0]["shared_limits"] = False
    async with Overdrive.from_config(config) as local:
        assert isinstance(local.upstreams()[0].queue(CHAT).limiter, LocalLimiter)
