"""One real 3-master Redis Cluster for the whole session, and a client that sees all of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from tests.cache.conftest import FakeWall
from tests.redis_server import RedisCluster as Cluster

from .util import primaries


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Started once (forming a cluster takes Redis about two seconds); tests empty it."""
    cluster = Cluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def raw(redis_cluster: Cluster) -> AsyncIterator[RedisCluster]:
    """A plain redis-py cluster client, on a cluster emptied for this test."""
    nodes = [ClusterNode("127.0.0.1", node.port) for node in redis_cluster.nodes]
    client = RedisCluster(startup_nodes=nodes)
    for node in await primaries(client):
        await client.flushall(target_nodes=node)
    yield client
    await client.aclose()


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall(time.time())
