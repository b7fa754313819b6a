"""The semantic tier's shared log on a real Redis Cluster: a stream per model, read back by all."""

from __future__ import annotations

import numpy as np
from redis.asyncio.cluster import RedisCluster

from overdrive.cache.semantic import Record, SharedLog
from tests.cache.conftest import FakeWall
from tests.cache.semantic.test_shared import shared_tier
from tests.cache.semantic.test_tier import probe, remember
from tests.redis_server import RedisCluster as Cluster

from .util import masters_of

MODELS = [f"model-{index}" for index in range(8)]


def log(url: str, model: str = "toy") -> SharedLog:
    return SharedLog(url, namespace="t", model=model, max_entries=100)


async def test_records_appended_by_one_log_are_read_back_by_another(
    redis_cluster: Cluster, raw: RedisCluster, wall: FakeWall
) -> None:
    writer, reader = log(redis_cluster.url), log(redis_cluster.url)
    vector = np.arange(5, dtype=np.float32)
    try:
        for index in range(3):
            await writer.publish(Record(b"s", b"k%d" % index, f"q{index}", vector, wall() + 60))
        got = await reader.read_new(5, wall)
        assert await writer.read_new(5, wall) == []  # its own records, skipped
        assert await reader.read_new(5, wall) == []  # nothing new since
    finally:
        await writer.aclose()
        await reader.aclose()
    assert [(r.key, r.text, r.vector.tolist()) for r in got] == [
        (b"k%d" % index, f"q{index}", vector.tolist()) for index in range(3)
    ]
    assert await raw.xlen(b"od:t:semantic:toy") == 3


async def test_each_models_stream_lives_on_its_own_slot(
    redis_cluster: Cluster, raw: RedisCluster, wall: FakeWall
) -> None:
    vector = np.ones(5, dtype=np.float32)
    for model in MODELS:
        writer = log(redis_cluster.url, model)
        await writer.publish(Record(b"s", b"k", "q", vector, wall() + 60))
        await writer.aclose()
    streams = [b"od:t:semantic:" + model.encode() for model in MODELS]
    assert [await raw.xlen(stream) for stream in streams] == [1] * len(MODELS)
    assert len(await masters_of(raw, streams)) == 3


async def test_a_paraphrase_stored_by_one_tier_is_a_hit_in_another(
    redis_cluster: Cluster, raw: RedisCluster, wall: FakeWall
) -> None:
    writer = shared_tier(redis_cluster.url, wall)
    reader = shared_tier(redis_cluster.url, wall)
    try:
        await remember(writer, "What is the capital of France?", b"k1")
        found = await reader.lookup(probe(reader, "capital of France, please"))
    finally:
        await writer.aclose()
        await reader.aclose()
    assert [candidate.key for candidate in found] == [b"k1"]
    assert (writer.errors, reader.errors) == (0, 0)
