"""Two processes share one real redis-server: a paraphrase stored by one is a hit in the other."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[3]


async def test_a_paraphrase_stored_by_one_process_is_a_semantic_hit_in_another(
    redis_server: RedisServer,
) -> None:
    config = SimConfig(seed=2, ttft_s=0.0, per_token_s=0.0, jitter=0.0, models=("gpt-4o-mini",))
    with SimServer(config) as sim:
        child = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "tests.cache.semantic.semantic_child",
                redis_server.url,
                sim.base_url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        config_here = {
            "upstreams": [{"name": "sim", "base_url": sim.base_url, "models": ["gpt-4o-mini"]}],
            "cache": {"redis_url": redis_server.url, "semantic": {"enabled": True}},
        }
        async with Overdrive.from_config(config_here) as od:
            assert od.semantic is not None
            await od.semantic.warm()  # until the model is loaded, a lookup is a miss
            ask = {"role": "user", "content": "How can I reset my password?"}
            client = od.http_client()
            reply = await client.post(
                "http://any/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [ask]}
            )
            assert reply.headers["x-overdrive-cache"] == "SEMANTIC"
            assert reply.json()["choices"][0]["message"]["content"] == child.stdout.strip()
            await client.aclose()
        assert sim.stats()["requests"].get("/v1/chat/completions", 0) == 1
