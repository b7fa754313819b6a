"""The shared Redis helper: redaction, connecting, the breaker (on the fake clock)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from overdrive import CacheError, ConfigError
from overdrive._asgi_server import free_port
from overdrive._redis import Breaker, connect, describe, namespace_prefix, safe_url
from overdrive.testing import FakeClock
from tests.redis_server import RedisServer


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://app:s3cret@cache:6379/0", "redis://cache:6379/0"),
        ("redis://app@cache:6379", "redis://cache:6379"),
        ("rediss://:s3cret@cache:6380/1", "rediss://cache:6380/1"),
        ("redis://cache/0?password=s3cret&db=2", "redis://cache/0"),
        ("redis://cache/0#s3cret", "redis://cache/0"),
        ("unix://:s3cret@/run/redis.sock?db=3", "unix:///run/redis.sock"),
        # Unencoded marks inside a password: an '@' or '/' is still cut off ...
        ("redis://:s3@cr/et@cache:6379", "redis://cache:6379"),
        # ... and where '?' or '#' may start the query or sit in the password, nothing is shown.
        ("redis://:s3?cret@cache:6379", "redis://<redacted>"),
        ("redis://u@x:s3#cret@cache", "redis://<redacted>"),
        ("app:s3cret@cache:6379", "cache:6379"),  # no scheme at all
        ("redis://user:s3cret@cache:port/0", "redis://cache:port/0"),  # unparseable port
    ],
)
def test_safe_url_shows_no_user_password_or_query(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert not any(secret in shown for secret in ("s3", "app", "user"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:s3cret@127.0.0.1:6379", "expected a redis://"),
        ("redis://user:s3cret@127.0.0.1:port/0", "Port could not be cast"),
        ("redis://user:s3cret@127.0.0.1:99999/0", "Port out of range"),
    ],
)
def test_connect_errors_name_the_url_redacted(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        connect(url, 0.25, field="cache.redis_url")
    assert caught.value.field == "cache.redis_url"
    assert "://127.0.0.1" in caught.value.problem  # the server is named ...
    assert not any(secret in str(caught.value) for secret in ("s3cret", "user"))  # ... alone


def test_namespace_prefix_refuses_a_colon() -> None:
    assert namespace_prefix("tenant-a") == b"od:tenant-a:"
    with pytest.raises(ConfigError, match="':'") as caught:
        namespace_prefix("a:b")
    assert caught.value.field == "namespace"


class Hooks:
    """Records what a breaker reports about outages."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def outage(self, exc: BaseException) -> None:
        self.events.append(f"outage: {type(exc).__name__}")

    def recovery(self) -> None:
        self.events.append("recovered")


def breaker(clock: FakeClock, hooks: Hooks | None = None) -> Breaker:
    hooks = hooks or Hooks()
    return Breaker(
        "test",
        timeout=0.05,
        backoff=1.0,
        clock=clock,
        on_outage=hooks.outage,
        on_recovery=hooks.recovery,
    )


async def answer(value: int) -> int:
    return value


async def refuse() -> int:
    raise ConnectionRefusedError("refused")


async def test_breaker_opens_goes_half_open_and_closes(clock: FakeClock) -> None:
    hooks = Hooks()
    guard = breaker(clock, hooks)
    assert (guard.state, await guard.run(answer(1))) == ("closed", 1)

    with pytest.raises(ConnectionRefusedError):
        await guard.run(refuse())
    assert (guard.state, guard.skip(), guard.skip()) == ("open", True, True)

    clock.advance(1.0)  # the backoff is over: the next call is a trial
    assert (guard.state, guard.skip()) == ("half-open", False)
    with pytest.raises(ConnectionRefusedError):
        await guard.run(refuse())  # the trial failed: open again, same outage
    assert guard.state == "open"

    clock.advance(1.0)
    assert await guard.run(answer(2)) == 2
    assert (guard.state, guard.failing) == ("closed", False)
    assert (guard.errors, guard.skipped_while_down, guard.outages) == (2, 2, 1)
    assert hooks.events == ["outage: ConnectionRefusedError", "recovered"]
    assert repr(guard) == (
        "Breaker('test', state='closed', errors=2, skipped_while_down=2, outages=1)"
    )


async def test_breaker_counts_a_deadline_as_a_failure(clock: FakeClock) -> None:
    guard = breaker(clock)
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await guard.run(never)  # 0.05 s of real time: asyncio.timeout is the loop's
    assert (guard.state, guard.errors) == ("open", 1)


async def test_call_raises_cache_errors_and_lets_other_errors_through(clock: FakeClock) -> None:
    guard = breaker(clock)
    with pytest.raises(CacheError, match="ConnectionRefusedError: refused") as caught:
        await guard.call(refuse())
    assert caught.value.tier == "test"

    async def broken() -> int:
        raise KeyError("a bug, not Redis failing")

    clock.advance(1.0)
    with pytest.raises(KeyError):
        await guard.call(broken())
    assert (guard.errors, guard.state) == (1, "half-open")  # a bug does not trip it


async def test_a_dead_server_trips_the_breaker(clock: FakeClock) -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", 0.2)
    guard = breaker(clock)
    try:
        with pytest.raises(CacheError):
            await guard.call(client.ping())
    finally:
        await client.aclose()
    assert guard.state == "open"


async def test_a_live_server_answers_and_is_described(
    redis_server: RedisServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(redis_server.url, 1.0)
    guard = breaker(clock)
    try:
        with caplog.at_level(logging.DEBUG, logger="overdrive._redis"):
            assert await guard.call(client.ping())
        assert describe(client) == f"redis://127.0.0.1:{redis_server.port}"
    finally:
        await client.aclose()
    assert guard.state == "closed"
    assert caplog.records == []  # the helper logs nothing: its owner decides
