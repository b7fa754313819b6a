"""What an upstream tells the router: rate-limit headroom, weight, and the answer to a probe."""

from __future__ import annotations

import httpx
import pytest

from overdrive.config import UpstreamConfig
from overdrive.testing import FakeClock
from overdrive.upstream import Upstream
from tests.fakes import FakeServer, refusing_url


def upstream(clock: FakeClock, base_url: str = "http://a.test/v1", **config: object) -> Upstream:
    settings = UpstreamConfig.model_validate(
        {"name": "a", "base_url": base_url, "models": ["m", "n"], **config}
    )
    return Upstream(settings, clock)


async def test_headroom_is_the_share_of_the_burst_not_booked(clock: FakeClock) -> None:
    u = upstream(clock, rpm=600, burst=1.0)  # 10 requests a second, 10 at once
    assert u.headroom("m") == 1.0
    limiter = u.queue("m").limiter
    for _ in range(4):
        assert await limiter.try_acquire(1, 0) == 0.0
    assert u.headroom("m") == pytest.approx(0.6)
    clock.advance(0.2)  # two requests' worth back
    assert u.headroom("m") == pytest.approx(0.8)
    await limiter.hold(5.0)  # a 429 said wait
    assert u.headroom("m") == 0.0
    await u.aclose()


async def test_headroom_takes_the_tighter_of_requests_and_tokens(clock: FakeClock) -> None:
    u = upstream(clock, rpm=600, tpm=60_000, burst=1.0)  # 1000 tokens a second
    assert await u.queue("m").limiter.try_acquire(1, 900) == 0.0
    assert u.headroom("m") == pytest.approx(0.1)
    await u.aclose()


async def test_unlimited_upstreams_always_have_headroom(clock: FakeClock) -> None:
    u = upstream(clock, weight=2.0)
    assert (u.headroom("m"), u.weight) == (1.0, 2.0)
    await u.aclose()


@pytest.mark.parametrize(("status", "up"), [(200, True), (401, True), (404, True), (503, False)])
async def test_probe_is_up_below_500(clock: FakeClock, status: int, up: bool) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(status, json={})

    async with FakeServer(handler) as server:
        u = upstream(clock, server.url)
        assert await u.probe("/models", 1.0) is up
        await u.aclose()
    assert paths == ["/v1/models"]


async def test_a_probe_that_cannot_connect_is_down(clock: FakeClock) -> None:
    with refusing_url() as url:
        u = upstream(clock, url)
        assert await u.probe("/models", 1.0) is False
        await u.aclose()
