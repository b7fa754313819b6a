"""Naming a cluster: the URL scheme, the config field, redaction, and a client's loops."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection

from overdrive import CacheError, ConfigError
from overdrive._asgi_server import free_port
from overdrive._redis import connect, describe, safe_url
from overdrive.cache._redis import RedisTier
from overdrive.cache._tier import Entry
from overdrive.config import CacheConfig
from overdrive.flow import LimitSpec, RedisLimiter
from overdrive.testing import FakeClock
from tests.redis_server import RedisCluster as Cluster


def test_a_cluster_url_makes_a_cluster_client_and_is_redacted() -> None:
    url = "redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/0"
    client = connect(url, 0.25)
    assert isinstance(client, RedisCluster)
    assert describe(client) == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
    assert safe_url(url) == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/0"
    assert safe_url("rediss+cluster://:p@ss@h:1") == "rediss+cluster://h:1"
    nodes = client.nodes_manager.startup_nodes.values()
    assert {node.connection_kwargs["password"] for node in nodes} == {"s3cret"}
    assert {node.connection_kwargs["socket_timeout"] for node in nodes} == {0.25}
    assert client.retry.get_retries() == 0  # one failure trips the breaker, not a retry loop


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://user:s3cret@127.0.0.1:7000/3", "db"),
        ("redis+cluster://user:s3cret@127.0.0.1:port", "Port could not be cast"),
        ("redis+cluster://user:s3cret@127.0.0.1:7000,", "no host"),
        ("redis+cluster://user:s3cret@127.0.0.1:7000?bogus=1", "bogus"),
    ],
)
def test_a_bad_cluster_url_names_the_field_not_the_secret(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        connect(url, 0.25, field="cache.redis_url")
    assert caught.value.field == "cache.redis_url"
    assert not any(secret in str(caught.value) for secret in ("s3cret", "user"))


def test_the_config_takes_cluster_urls() -> None:
    for url in ("redis+cluster://a:7000,b:7000", "rediss+cluster://a:7000"):
        assert CacheConfig(redis_url=url).redis_url == url
    with pytest.raises(ValidationError, match=r"redis\+cluster://"):
        CacheConfig(redis_url="cluster://a:7000")


def entry(value: bytes) -> Entry:
    now = time.time()
    return Entry(value, expires_at=now + 10, stale_until=now + 20)


def connections_of(client: RedisCluster) -> list[Connection]:
    manager = client.nodes_manager
    nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
    return [connection for node in nodes for connection in node._connections]


async def disconnect(connections: list[Connection]) -> None:
    await asyncio.gather(*(connection.disconnect() for connection in connections))


def test_a_tier_moves_from_loop_to_loop(redis_cluster: Cluster) -> None:
    tier = RedisTier(redis_cluster.url, clock=FakeClock(), timeout=2.0)
    client = tier._client
    assert isinstance(client, RedisCluster)

    async def store_and_close_idle() -> None:
        await tier.set(b"k", entry(b"first loop"))
        await tier.close_idle()  # as the engine does when its loop ends

    async def read_and_close() -> Entry | None:
        try:
            return await tier.get(b"k")
        finally:
            await tier.aclose()

    asyncio.run(store_and_close_idle())
    abandoned = asyncio.new_event_loop()  # a loop left without close_idle
    try:
        found = abandoned.run_until_complete(tier.get(b"k"))
        stranded = connections_of(client)
        tier.forget_loop()
        again = asyncio.run(read_and_close())  # fresh connections: the old ones need `abandoned`
        assert not set(stranded) & set(connections_of(client))
    finally:
        # Only so this test leaves no socket open: a loop really gone takes them with it.
        abandoned.run_until_complete(disconnect(stranded))
        abandoned.close()
    assert found is not None
    assert again is not None
    assert (found.value, again.value, tier.errors) == (b"first loop", b"first loop", 0)


@pytest.mark.parametrize("namespace", ["{team}", "a}b"])
def test_a_namespace_with_a_brace_is_refused(namespace: str) -> None:
    # It would start the hash tag before the one that keeps an entry with its tags.
    with pytest.raises(ConfigError, match="must not contain") as caught:
        RedisTier("redis+cluster://127.0.0.1:1", namespace=namespace)
    assert caught.value.field == "namespace"
    with pytest.raises(ConfigError, match="braces") as caught:
        RedisLimiter(LimitSpec(60, None, 1.0), name="m", url="redis://h:1", namespace=namespace)
    assert caught.value.field == "namespace"


async def test_an_unreachable_cluster_fails_fast_then_skips_while_down() -> None:
    clock = FakeClock()
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    tier = RedisTier(url, clock=clock, timeout=0.25, backoff=1.0)
    try:
        async with asyncio.timeout(2):  # three refused nodes, not three deadlines
            with pytest.raises(CacheError, match="Redis"):
                await tier.get(b"k")
        for _ in range(20):
            with pytest.raises(CacheError, match="marked down"):
                await tier.get(b"k")
        assert (tier.errors, tier.skipped_while_down) == (1, 20)
        clock.advance(1.0)
        with pytest.raises(CacheError, match="Redis"):
            await tier.get(b"k")  # tried again after the backoff
        assert tier.errors == 2
    finally:
        await tier.aclose()
