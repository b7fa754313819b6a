"""Two gateway replicas sharing one real Redis: one key's limit holds in total, not per replica.

Each replica is its own app, engine and uvicorn loop; all they share is the Redis.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer
from tests.redis_server import RedisServer

SECRET = "sk-replicated-9c1f"
RPM = 120
BURST_S = 1.0
RUN_S = 2.0


@pytest.fixture
def replicas(redis_server: RedisServer) -> Iterator[list[GatewayServer]]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as sim, ExitStack() as stack:
        config = {
            "upstreams": [{"name": "sim", "base_url": sim.base_url, "models": ["gpt-4o-mini"]}],
            "redis_url": redis_server.url,
            "gateway": {
                "keys": [
                    {"name": "shared", "key_sha256": hash_key(SECRET), "rpm": RPM, "burst": BURST_S}
                ]
            },
        }
        yield [stack.enter_context(GatewayServer(GatewayApp(config))) for _ in range(2)]


def test_two_replicas_enforce_one_keys_rpm_in_total(replicas: list[GatewayServer]) -> None:
    clients = [
        httpx.Client(base_url=r.base_url, headers={"authorization": f"Bearer {SECRET}"})
        for r in replicas
    ]
    outcomes: Counter[tuple[int, int]] = Counter()
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < RUN_S:
        replica = sent % 2
        response = clients[replica].post("/chat/completions", json=chat(sent))
        outcomes[replica, response.status_code] += 1
        sent += 1
    elapsed = time.monotonic() - started
    for c in clients:
        c.close()
    granted = outcomes[0, 200] + outcomes[1, 200]
    allowed = RPM / 60 * (BURST_S + elapsed)  # the burst, then the rate
    assert granted <= allowed + 1, outcomes  # per replica it would be twice that
    assert granted >= RPM / 60 * elapsed - 1, outcomes
    assert outcomes[0, 429]  # both replicas refused the excess
    assert outcomes[1, 429]
    assert set(status for _, status in outcomes) == {200, 429}


def chat(index: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"distinct prompt {index}"}],
        "max_tokens": 4,
    }
