"""The stage histograms mean what their help says: admission wait apart from the upstream's time.

The simulated upstream (its ASGI app on the test's fake clock, behind a real
socket) takes exactly ``TTFT`` per chat call. With one concurrency slot and
four calls at once, three of them wait for the slot: that wait is admission,
and the upstream's own histogram must still read ``TTFT`` per attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from overdrive import Overdrive
from overdrive.monitor.names import QUEUE_WAIT, UPSTREAM_DURATION
from overdrive.sim import SimApp, SimConfig
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, finish

TTFT = 0.4
CALLS = 4


@pytest.fixture
async def sim_url(clock: FakeClock) -> AsyncIterator[str]:
    app = SimApp(SimConfig(ttft_s=TTFT, per_token_s=0.0, jitter=0.0), clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as sim:

        async def handler(request: httpx.Request) -> httpx.Response:
            answer = await sim.send(
                sim.build_request(
                    request.method,
                    request.url.path,
                    content=request.content,
                    headers=request.headers,
                )
            )
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )

        async with FakeServer(handler) as server:
            yield server.url


def engine(url: str, clock: FakeClock) -> Overdrive:
    upstream: dict[str, Any] = {"name": "sim", "base_url": url, "models": ["m"], "concurrency": 1}
    config = {"upstreams": [upstream], "cache": {"enabled": False}}
    return Overdrive.from_config(config, clock=clock)


async def calls(od: Overdrive) -> None:
    asks = [[{"role": "user", "content": f"question {n}"}] for n in range(CALLS)]
    await asyncio.gather(*(od.chat(model="m", messages=messages) for messages in asks))


async def test_upstream_time_excludes_the_wait_for_a_slot(clock: FakeClock, sim_url: str) -> None:
    async with engine(sim_url, clock) as od:
        await finish(clock, calls(od))
        answered = od.metrics.histogram(UPSTREAM_DURATION, upstream="sim", op="chat")
        waited = od.metrics.histogram(QUEUE_WAIT, upstream="sim", op="chat")
    assert answered.count == CALLS
    assert answered.sum / answered.count == pytest.approx(TTFT)  # the sim's known latency
    assert answered.percentile(50) == pytest.approx(TTFT, rel=0.05)
    # One slot: the calls wait 0, 1, 2 and 3 answers' time for it.
    assert waited.count == CALLS
    assert waited.sum == pytest.approx(TTFT * (0 + 1 + 2 + 3))
    assert waited.percentile(50) == pytest.approx(TTFT * 1.5, rel=0.4)


async def test_the_stage_split_adds_up_to_the_request_time(clock: FakeClock, sim_url: str) -> None:
    async with engine(sim_url, clock) as od:
        await finish(clock, calls(od))
        answered = od.metrics.histogram(UPSTREAM_DURATION, upstream="sim", op="chat")
        waited = od.metrics.histogram(QUEUE_WAIT, upstream="sim", op="chat")
        whole = od.metrics.histogram("overdrive_request_duration_seconds", op="chat")
    assert whole.sum == pytest.approx(answered.sum + waited.sum)
