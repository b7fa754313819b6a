"""Semantic entries shared through a real redis-server: one tier remembers, another finds it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from overdrive.cache.semantic import BatchedEncoder, Guard, Record, SemanticTier, SharedLog
from tests.cache.conftest import FakeWall
from tests.cache.semantic.test_tier import ToyModel, probe, remember
from tests.redis_server import RedisServer


def shared_tier(
    url: str, wall: FakeWall, *, model: str = "toy", namespace: str = ""
) -> SemanticTier:
    log = SharedLog(url, namespace=namespace, model=model, max_entries=1000)
    return SemanticTier(BatchedEncoder(ToyModel(), name=model), Guard(0.9), shared=log, wall=wall)


async def test_an_entry_remembered_by_one_tier_is_found_by_another(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    writer, reader = shared_tier(redis_server.url, wall), shared_tier(redis_server.url, wall)
    await remember(writer, "What is the capital of France?", b"k1")
    found = await reader.lookup(probe(reader, "capital of France, please"))
    assert [c.key for c in found] == [b"k1"]
    assert len(writer) == 1  # its own record is not indexed twice
    assert await writer.lookup(probe(writer, "capital of France")) != []
    assert len(writer) == 1
    await writer.aclose()
    await reader.aclose()


async def test_a_new_process_starts_with_what_is_in_redis(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    writer = shared_tier(redis_server.url, wall)
    for index in range(3):
        await remember(writer, "invoice status", b"k%d" % index, scope=b"s%d" % index)
    await writer.aclose()
    late = shared_tier(redis_server.url, wall)
    found = await late.lookup(probe(late, "the invoice status", scope=b"s2"))
    assert [c.key for c in found] == [b"k2"]
    assert len(late) == 3
    await late.aclose()


async def test_expired_records_are_not_taken_up(redis_server: RedisServer, wall: FakeWall) -> None:
    writer = shared_tier(redis_server.url, wall)
    await remember(writer, "weather in Paris", b"k1")
    wall.advance(120)
    reader = shared_tier(redis_server.url, wall)
    assert await reader.lookup(probe(reader, "weather in Paris")) == []
    assert len(reader) == 0
    await writer.aclose()
    await reader.aclose()


async def test_namespaces_and_models_keep_their_streams_apart(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    writer = shared_tier(redis_server.url, wall, namespace="a")
    await remember(writer, "capital of France", b"k1")
    other_tenant = shared_tier(redis_server.url, wall, namespace="b")
    other_model = shared_tier(redis_server.url, wall, namespace="a", model="other")
    for tier in (other_tenant, other_model):
        await tier.lookup(probe(tier, "capital of France"))
        assert len(tier) == 0
        await tier.aclose()
    await writer.aclose()


async def test_records_of_another_size_or_damaged_ones_are_skipped(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    writer = SharedLog(redis_server.url, namespace="", model="toy", max_entries=100)
    odd = Record(b"scope", b"k9", "capital", np.ones(3, dtype=np.float32), wall() + 60)
    await writer.publish(odd)
    client = writer._client  # a record written by something that is not a tier
    await client.xadd(b"od::semantic:toy", {b"o": b"x", b"v": b"123"})
    reader = shared_tier(redis_server.url, wall)
    await remember(reader, "capital city", b"k1")  # fixes the size: 5
    await reader.lookup(probe(reader, "capital"))
    assert len(reader) == 1
    await writer.aclose()
    await reader.aclose()


async def test_the_stream_is_trimmed_near_max_entries(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    log = SharedLog(redis_server.url, namespace="", model="toy", max_entries=10)
    vector = np.ones(5, dtype=np.float32)
    for index in range(500):
        await log.publish(Record(b"s", b"k%d" % index, "t", vector, wall() + 60))
    length = await log._client.xlen(b"od::semantic:toy")
    assert length < 200  # approximate trimming: within a node of the bound, never all 500
    await log.aclose()


async def test_redis_gone_costs_sharing_not_lookups(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    tier = shared_tier(redis_server.url, wall)
    await remember(tier, "capital of France", b"k1")
    redis_server.stop()
    found = await tier.lookup(probe(tier, "the capital of France"))
    assert [c.key for c in found] == [b"k1"]
    assert tier.errors >= 1
    await tier.aclose()


@pytest.mark.parametrize("bad", ["http://127.0.0.1:1", "redis://127.0.0.1:notaport/0"])
def test_a_bad_url_names_the_field(bad: str) -> None:
    from overdrive import ConfigError

    with pytest.raises(ConfigError, match=r"cache\.redis_url"):
        SharedLog(bad, namespace="", model="toy", max_entries=10)


async def test_shared_records_of_another_size_never_break_this_process(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    stranger = SharedLog(redis_server.url, namespace="", model="toy", max_entries=100)
    odd = Record(b"scope", b"k9", "capital", np.ones(3, dtype=np.float32), wall() + 60)
    await stranger.publish(odd)  # read first, before this process has a vector of its own
    tier = shared_tier(redis_server.url, wall)
    assert await tier.lookup(probe(tier, "capital")) == []  # its 5-d vector beats the 3-d index
    await remember(tier, "capital city", b"k1")
    assert [c.key for c in await tier.lookup(probe(tier, "the capital city"))] == [b"k1"]
    await stranger.aclose()
    await tier.aclose()


async def test_concurrent_lookups_share_one_read_of_the_stream(
    redis_server: RedisServer, wall: FakeWall
) -> None:
    writer, reader = shared_tier(redis_server.url, wall), shared_tier(redis_server.url, wall)
    await remember(writer, "capital of France", b"k1")
    found = await asyncio.gather(
        *(reader.lookup(probe(reader, "the capital of France")) for _ in range(5))
    )
    assert [len(f) for f in found] == [1] * 5
    assert len(reader) == 1
    await writer.aclose()
    await reader.aclose()
