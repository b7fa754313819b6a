"""The shared rate limiter on a real Redis Cluster: one bucket per limiter, held across instances.

Redis paces on its own clock (TIME), so, as in tests/flow/test_redis_limiter.py,
answers are compared within a tolerance far above the time a scenario takes.
A cluster client spends more time per call (routing, in Python) than a plain
one, and the set_spec scenario drains the milliseconds between two calls at
ten times its later rate: its answers get a wider tolerance here. Exact
pacing is tested against a single server; here, that every script runs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from overdrive.flow import LimitSpec, LocalLimiter, RedisLimiter
from tests.flow.test_redis_limiter import SCENARIOS, TOLERANCE, play
from tests.redis_server import RedisCluster as Cluster

from .util import masters_of, slot_of


async def meet(*limiters: RedisLimiter) -> None:
    """Let each client learn the cluster (~100 ms, once) before the timed steps."""
    for limiter in limiters:
        assert await limiter.try_acquire(0, 0) == 0.0  # books nothing


@pytest.fixture
def without_gc_pauses() -> Iterator[None]:
    """No collection mid-scenario: a cluster client leaves enough garbage behind that
    a full one (~0.1 s here) would shift Redis's answers past the tolerance."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("without_gc_pauses")
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_same_answers_as_the_local_limiter(
    redis_cluster: Cluster, raw: RedisCluster, scenario: str
) -> None:
    # Every step is a multi-key script (or sets the spec with one): a slot each.
    spec, steps, expected = SCENARIOS[scenario]
    shared = RedisLimiter(spec, name="conformance", url=redis_cluster.url)
    await meet(shared)
    local_answers = await play(LocalLimiter(spec), steps)
    redis_answers = await play(shared, steps)
    await shared.aclose()
    assert shared.errors == 0
    for local, remote, want in zip(local_answers, redis_answers, expected, strict=True):
        assert (local == 0.0) == (remote == 0.0) == (want == 0.0), (local_answers, redis_answers)
        assert remote == pytest.approx(want, abs=3 * TOLERANCE)


@pytest.mark.usefixtures("without_gc_pauses")
async def test_two_instances_share_one_bucket_through_the_cluster(
    redis_cluster: Cluster, raw: RedisCluster
) -> None:
    spec = LimitSpec(rpm=60, tpm=600, burst=2.5)
    first = RedisLimiter(spec, name="model", url=redis_cluster.url, namespace="tenant")
    second = RedisLimiter(spec, name="model", url=redis_cluster.url, namespace="tenant")
    try:
        await meet(first, second)
        answers = [await limiter.try_acquire(1, 10) for limiter in (first, second, first)]
        await second.hold(0.8)  # one instance's hold stops the other too
        held = await first.try_acquire(0, 1)
    finally:
        await first.aclose()
        await second.aclose()
    assert answers[:2] == [0.0, 0.0]
    assert answers[2] == pytest.approx(0.5, abs=TOLERANCE)  # the third request of a 2.5 s burst
    assert held == pytest.approx(0.8, abs=TOLERANCE)
    keys = await raw.keys(target_nodes=RedisCluster.PRIMARIES)
    assert sorted(keys) == [b"tenant:limit:{model}:" + dim for dim in (b"hold", b"req", b"tok")]
    assert len({await slot_of(raw, key) for key in keys}) == 1
    assert (first.errors, second.errors) == (0, 0)


async def test_limiters_spread_over_the_masters(redis_cluster: Cluster, raw: RedisCluster) -> None:
    spec = LimitSpec(rpm=600, tpm=None, burst=1.0)
    limiters = [RedisLimiter(spec, name=f"model-{i}", url=redis_cluster.url) for i in range(12)]
    for limiter in limiters:
        assert await limiter.try_acquire(1, 0) == 0.0
        await limiter.aclose()
    keys = await raw.keys(target_nodes=RedisCluster.PRIMARIES)
    assert len(keys) == 12
    assert len(await masters_of(raw, keys)) == 3
