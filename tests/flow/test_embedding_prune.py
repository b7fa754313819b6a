"""Embedding batchers of groups gone quiet are dropped: distinct options cannot grow memory."""

from __future__ import annotations

import asyncio

from overdrive._calls import Call, Result, embeddings_call
from overdrive._json import dumps
from overdrive.config import EmbeddingBatchConfig
from overdrive.flow import EmbeddingBatches
from overdrive.monitor import Metrics
from overdrive.testing import FakeClock
from tests.fakes import embeddings_response, finish


def _batches(
    clock: FakeClock, sent: list[Call], hold: asyncio.Event | None = None
) -> EmbeddingBatches:
    async def send(call: Call) -> Result:
        sent.append(call)
        if hold is not None and call.body.get("user") == "busy":
            await hold.wait()
        count = len(call.body["input"])
        return Result(200, dumps(embeddings_response(call.model, count)), "a")

    config = EmbeddingBatchConfig(max_wait_ms=5)
    return EmbeddingBatches(config, send, Metrics(clock=clock), clock)


async def test_twenty_thousand_distinct_groups_keep_few_batchers(clock: FakeClock) -> None:
    sent: list[Call] = []
    batches = _batches(clock, sent)
    most = 0
    for user in range(20_000):
        call = embeddings_call({"model": "e", "input": "same text", "user": f"u{user}"})
        await finish(clock, batches.submit(call))
        most = max(most, batches.groups)
    assert len(sent) == 20_000
    assert most <= 64
    await batches.aclose()


async def test_a_group_with_a_batch_in_flight_survives_the_pruning(clock: FakeClock) -> None:
    sent: list[Call] = []
    hold = asyncio.Event()
    batches = _batches(clock, sent, hold)
    busy_call = embeddings_call({"model": "e", "input": "waiting", "user": "busy"})
    busy = asyncio.ensure_future(batches.submit(busy_call))
    await asyncio.sleep(0)
    await clock.run_for(0.02)  # its batch is sent and held upstream
    assert [call.body["user"] for call in sent] == ["busy"]
    for user in range(200):
        call = embeddings_call({"model": "e", "input": "t", "user": f"quiet{user}"})
        await finish(clock, batches.submit(call))
    assert batches.groups < 64
    assert batches.groups >= 1
    batches.max_batch = 8  # a tunable still reaches the busy group's batcher
    assert batches._batcher(busy_call).max_batch == 8
    hold.set()
    reply = await finish(clock, busy)
    assert reply.ok
    await batches.aclose()
