"""A key asks for priority only up to its ``max_priority``; failures never show addresses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from overdrive import Overdrive
from overdrive._calls import Call
from overdrive._clock import SystemClock
from overdrive._json import dumps, loads
from overdrive.config import GatewayKey
from overdrive.doors._answer import PRIORITY_HEADER, answer
from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.gateway._tenants import Tenant
from overdrive.sim import SimConfig, SimServer

BODY = dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


class RecordingTenant(Tenant):
    """A real tenant that notes the admission each call was made with."""

    def __init__(self, **key: Any) -> None:
        super().__init__(GatewayKey(name="t", key_sha256="0" * 64, **key), None, SystemClock())
        self.priorities: list[int] = []

    async def admit(self, call: Call) -> float:
        self.priorities.append(call.admission.priority)
        return await super().admit(call)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as server:
        yield server


@pytest.fixture
async def od(sim: SimServer) -> AsyncIterator[Overdrive]:
    config = {"upstreams": [{"name": "sim", "base_url": sim.base_url, "models": ["m"]}]}
    async with Overdrive.from_config(config) as engine:
        yield engine


@pytest.mark.parametrize(
    ("max_priority", "asked", "got"),
    [(0, "1000000", 0), (5, "1000000", 5), (5, "3", 3), (0, "-4", -4)],
)
async def test_a_key_cannot_ask_above_its_max_priority(
    od: Overdrive, max_priority: int, asked: str, got: int
) -> None:
    tenant = RecordingTenant(max_priority=max_priority)
    reply = await answer(od, "chat", {PRIORITY_HEADER: asked}, BODY, tenant)
    assert reply.status == 200
    assert tenant.priorities == [got]


async def test_without_keys_the_asked_priority_stands(
    od: Overdrive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No gate: one operator, nobody else's calls to overtake.
    seen: list[int] = []
    original = od.request

    async def recording(call: Call) -> Any:
        seen.append(call.admission.priority)
        return await original(call)

    monkeypatch.setattr(od, "request", recording)
    reply = await answer(od, "chat", {PRIORITY_HEADER: "77"}, BODY)
    assert reply.status == 200
    assert seen == [77]


async def test_an_unreachable_upstream_is_named_never_located() -> None:
    config = {
        "upstreams": [{"name": "primary", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}],
        "retry": {"attempts": 0},
    }
    async with Overdrive.from_config(config) as od:
        reply = await answer(od, "chat", {}, BODY)
    assert reply.status == 502
    message = loads(reply.body)["error"]["message"]
    assert "'primary'" in message
    assert "127.0.0.1" not in message


async def test_an_upstream_that_times_out_is_a_504_naming_it() -> None:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, hang_rate=1.0, hang_s=30)) as hung:
        upstream = {"name": "slow", "base_url": hung.base_url, "models": ["m"], "timeout": "0.2s"}
        config = {"upstreams": [upstream], "retry": {"attempts": 0}}
        async with Overdrive.from_config(config) as od:
            reply = await answer(od, "chat", {}, BODY)
    assert reply.status == 504
    error = loads(reply.body)["error"]
    assert error["code"] == "upstream_timeout"
    assert "'slow'" in error["message"]
    assert "127.0.0.1" not in error["message"]


async def test_on_the_gateway_a_huge_priority_does_not_overtake_another_key() -> None:
    keys = [
        {"name": "patient", "key_sha256": hash_key("sk-patient")},
        {"name": "pushy", "key_sha256": hash_key("sk-pushy")},
    ]
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as sim:
        # 600 rpm with a 0.5 s burst: 5 calls at once, then one every 100 ms.
        upstream = {"name": "sim", "base_url": sim.base_url, "models": ["m"], "rpm": 600}
        config = {"upstreams": [upstream], "gateway": {"keys": keys}, "cache": {"enabled": False}}
        with GatewayServer(GatewayApp(config)) as gateway:
            finished = await _race(gateway)
    # The pushy call came last and asked for 1,000,000: it still waits its turn.
    assert finished[-1] == "pushy"


async def _race(gateway: GatewayServer) -> list[str]:
    finished: list[str] = []
    burst_served = asyncio.Event()

    async def call(http: httpx.AsyncClient, key: str, prompt: str, **headers: str) -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 2}
        auth = {"authorization": f"Bearer sk-{key}", **headers}
        response = await http.post("/v1/chat/completions", json=body, headers=auth)
        assert response.status_code == 200, response.text
        finished.append(key)
        if len(finished) == 5:  # the burst; the other four wait behind the rate
            burst_served.set()

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        patient = [asyncio.ensure_future(call(http, "patient", f"q{i}")) for i in range(9)]
        await burst_served.wait()
        await call(http, "pushy", "jump", **{PRIORITY_HEADER: "1000000"})
        await asyncio.gather(*patient)
    return finished
