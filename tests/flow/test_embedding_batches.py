from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from overdrive import Overdrive, UpstreamProtocolError, UpstreamStatusError
from overdrive._calls import Result
from overdrive.flow._embedding_batches import split_embeddings
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream, finish, status


def _engine(fake: FakeUpstream, clock: FakeClock, **batching: Any) -> Overdrive:
    config = {
        "upstreams": [{"name": "a", "base_url": fake.url, "models": ["e", "f"]}],
        "batching": {"embeddings": batching},
    }
    return Overdrive.from_config(config, clock=clock)


async def embed_all(
    od: Overdrive, clock: FakeClock, texts: list[str], model: str = "e"
) -> list[Any]:
    return list(await finish(clock, asyncio.gather(*(od.embed(t, model=model) for t in texts))))


async def test_single_text_calls_go_upstream_as_one(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    texts = [f"text {i}" for i in range(10)]
    async with fake, _engine(fake, clock) as od:
        replies = await embed_all(od, clock, texts)
    assert len(fake.calls) == 1
    assert fake.calls[0][2]["input"] == texts
    # Each caller gets its own vector, re-indexed as a one-input answer.
    assert [r["data"][0]["embedding"][0] for r in replies] == [float(i) for i in range(10)]
    assert all(r["data"][0]["index"] == 0 and len(r["data"]) == 1 for r in replies)
    assert od.metrics.histogram("overdrive_batch_size", op="embeddings").max == 10


async def test_batches_respect_max_batch_and_options(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    async with fake, _engine(fake, clock, max_batch=4) as od:
        await embed_all(od, clock, [f"t{i}" for i in range(10)])
        await embed_all(od, clock, ["x", "y"], model="f")
    sizes = sorted(len(body["input"]) for _, _, body in fake.calls)
    assert sizes == [2, 2, 4, 4]
    assert {body["model"] for _, _, body in fake.calls} == {"e", "f"}


async def test_batching_can_be_turned_off(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    async with fake, _engine(fake, clock, enabled=False) as od:
        await embed_all(od, clock, ["a", "b", "c"])
    assert len(fake.calls) == 3


async def test_repeats_are_cached_per_text(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    async with fake, _engine(fake, clock) as od:
        await embed_all(od, clock, ["a", "b"])
        await embed_all(od, clock, ["a", "b", "c"])
    assert [body["input"] for _, _, body in fake.calls] == [["a", "b"], ["c"]]


async def test_a_failed_batch_fails_each_caller(clock: FakeClock) -> None:
    fake = FakeUpstream(clock, script=[status(400)])
    async with fake, _engine(fake, clock) as od:
        calls = [od.embed(t, model="e") for t in ("a", "b")]
        results = await finish(clock, asyncio.gather(*calls, return_exceptions=True))
    assert all(isinstance(r, UpstreamStatusError) and r.status == 400 for r in results)


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b'{"data": []}',
        b'{"data": [{"index": 0}, {"index": 0}]}',
        b'{"data": [{"x": 1}, {"index": 1}]}',
    ],
)
def test_malformed_batch_answers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError, match="2 indexed items"):
        split_embeddings(Result(200, body, "a"), 2)


def test_usage_is_shared_out_without_loss() -> None:
    answer = {
        "object": "list",
        "data": [{"index": 1, "embedding": [1]}, {"index": 0, "embedding": [0]}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    parts = [
        json.loads(p) for p in split_embeddings(Result(200, json.dumps(answer).encode(), "a"), 2)
    ]
    assert [p["data"][0]["embedding"] for p in parts] == [[0], [1]]
    assert sum(p["usage"]["prompt_tokens"] for p in parts) == 7
