"""RedisLimiter over a real redis-server: same answers as LocalLimiter, one limit across processes.

Redis paces on its own clock, so these tests use real time. They are built to
be robust to it: rates are slow enough (intervals of 0.1 s and more) that the
milliseconds between two calls never flip a decision, and waits are compared
within a tolerance.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from overdrive import ConfigError
from overdrive.flow import Limiter, LimitSpec, LocalLimiter, RedisLimiter
from overdrive.testing import FakeClock
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]

# One step of a scenario: ("acquire", requests, tokens), ("adjust", tokens),
# ("hold", seconds) or ("spec", LimitSpec); only acquire has an answer.
Step = tuple[Any, ...]
TOLERANCE = 0.05  # seconds: far more than the time a scenario takes to run

SCENARIOS: dict[str, tuple[LimitSpec, list[Step], list[float]]] = {
    "burst, then refusals that book nothing": (
        LimitSpec(rpm=60, tpm=None, burst=2.5),
        [("acquire", 1, 0)] * 4,
        [0.0, 0.0, 0.5, 0.5],
    ),
    "a cost larger than the burst goes once the bucket is full": (
        LimitSpec(rpm=None, tpm=600, burst=1.0),
        [("acquire", 0, 30), ("acquire", 0, 1)],
        [0.0, 2.1],
    ),
    "both dimensions fit or neither is booked": (
        LimitSpec(rpm=60, tpm=600, burst=2.5),
        [("acquire", 1, 20), ("acquire", 1, 20), ("acquire", 1, 0), ("acquire", 1, 0)],
        # The refused call's request was not booked: the third call still fits.
        [0.0, 1.5, 0.0, 0.5],
    ),
    "a hold stops everything and a shorter one does not shorten it": (
        LimitSpec(rpm=600, tpm=None, burst=1.0),
        [("hold", 0.8), ("acquire", 1, 0), ("hold", 0.1), ("acquire", 1, 0), ("acquire", 0, 0)],
        [0.8, 0.8, 0.8],
    ),
    "adjust gives tokens back and adds them": (
        LimitSpec(rpm=None, tpm=600, burst=1.0),
        [
            *[("acquire", 0, 10), ("acquire", 0, 5), ("adjust", -6), ("acquire", 0, 5)],
            *[("adjust", 10), ("acquire", 0, 1)],
        ],
        [0.0, 0.5, 0.0, 1.0],
    ),
    "set_spec re-paces the units booked at the new rate": (
        LimitSpec(rpm=600, tpm=None, burst=0.5),
        [
            *[("acquire", 5, 0), ("spec", LimitSpec(60, None, 0.5)), ("acquire", 1, 0)],
            *[("spec", LimitSpec(600, None, 0.5)), ("acquire", 1, 0)],
            *[("spec", LimitSpec(None, None, 0.5)), ("acquire", 1, 0)],
        ],
        # Five units booked: 5 s ahead at 60 RPM, back to 0.5 s at 600 RPM.
        [0.0, 5.0, 0.1, 0.0],
    ),
    "zero costs are always free": (
        LimitSpec(rpm=60, tpm=600, burst=1.0),
        [("acquire", 1, 10), ("acquire", 0, 0), ("acquire", 0, 0)],
        [0.0, 0.0, 0.0],
    ),
}


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def play(limiter: Limiter, steps: list[Step]) -> list[float]:
    """The answers of the acquire steps, in order."""
    answers = []
    for kind, *args in steps:
        if kind == "acquire":
            answers.append(await limiter.try_acquire(*args))
        elif kind == "adjust":
            await limiter.adjust(*args)
        elif kind == "hold":
            await limiter.hold(*args)
        else:
            await limiter.set_spec(*args)
    return answers


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_same_answers_as_the_local_limiter(redis_server: RedisServer, scenario: str) -> None:
    spec, steps, expected = SCENARIOS[scenario]
    shared = RedisLimiter(spec, name="conformance", url=redis_server.url)
    local_answers = await play(LocalLimiter(spec), steps)
    redis_answers = await play(shared, steps)
    await shared.aclose()
    assert shared.errors == 0
    for local, remote, want in zip(local_answers, redis_answers, expected, strict=True):
        assert (local == 0.0) == (remote == 0.0) == (want == 0.0), (local_answers, redis_answers)
        assert local == pytest.approx(want, abs=TOLERANCE)
        assert remote == pytest.approx(want, abs=TOLERANCE)


async def test_two_limiters_with_one_name_share_one_limit(redis_server: RedisServer) -> None:
    spec = LimitSpec(rpm=60, tpm=None, burst=2.5)
    first = RedisLimiter(spec, name="model", url=redis_server.url)
    second = RedisLimiter(spec, name="model", url=redis_server.url)
    other = RedisLimiter(spec, name="other-model", url=redis_server.url)
    answers = [await limiter.try_acquire(1, 0) for limiter in (first, second, first, other)]
    for limiter in (first, second, other):
        await limiter.aclose()
    assert answers[:2] == [0.0, 0.0]
    assert answers[2] == pytest.approx(0.5, abs=TOLERANCE)
    assert answers[3] == 0.0


async def test_a_new_spec_carries_units_once_however_many_processes_apply_it(
    redis_server: RedisServer,
) -> None:
    spec, slower = LimitSpec(600, None, 0.5), LimitSpec(60, None, 0.5)
    first, second, third = (RedisLimiter(spec, name="m", url=redis_server.url) for _ in range(3))
    assert await first.try_acquire(5, 0) == 0.0
    await first.set_spec(slower)
    await second.set_spec(slower)  # again: must not re-pace what is already re-paced
    assert await second.try_acquire(1, 0) == pytest.approx(5.0, abs=TOLERANCE)
    # A process still configured at 600 RPM sees the same five units at its rate.
    assert await third.try_acquire(1, 0) == pytest.approx(0.1, abs=TOLERANCE)
    for limiter in (first, second, third):
        await limiter.aclose()


async def test_keys_share_a_slot_and_expire_once_idle(
    redis_server: RedisServer, raw: Redis
) -> None:
    spec = LimitSpec(rpm=6000, tpm=60000, burst=0.05)
    limiter = RedisLimiter(spec, name="gpt", url=redis_server.url, namespace="tenant")
    await limiter.try_acquire(1, 10)
    await limiter.hold(2.0)
    await limiter.aclose()
    keys = sorted(cast("list[bytes]", await raw.keys("*")))
    assert keys == [
        b"tenant:limit:{gpt}:hold",
        b"tenant:limit:{gpt}:req",
        b"tenant:limit:{gpt}:tok",
    ]
    # Each dimension booked 0.01 s ahead, burst 0.05 s, plus a second of margin.
    for dimension in ("req", "tok"):
        assert 1000 < await raw.pttl(f"tenant:limit:{{gpt}}:{dimension}") <= 1060
    assert await raw.hget("tenant:limit:{gpt}:req", "interval") == b"0.01"
    assert 2000 < await raw.pttl("tenant:limit:{gpt}:hold") <= 3000


async def test_tokens_given_back_below_now_keep_the_key_short_lived(
    redis_server: RedisServer, raw: Redis
) -> None:
    limiter = RedisLimiter(LimitSpec(None, 600, 1.0), name="m", url=redis_server.url)
    await limiter.try_acquire(0, 50)
    await limiter.adjust(-1000)
    await limiter.aclose()
    assert 1000 < await raw.pttl("overdrive:limit:{m}:tok") <= 2000


async def test_four_processes_hold_one_limit(redis_server: RedisServer, raw: Redis) -> None:
    rpm, burst, seconds = 6000, 0.05, 3.0
    args = (redis_server.url, "shared", str(rpm), str(burst), str(seconds))
    procs = [
        await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.flow.limiter_child", *args),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(30):
        for proc in procs:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
        await raw.rpush("go", *[repr(time.time() + 0.2)] * 4)
        outputs = [(await proc.communicate())[0].decode().split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    assert [errors for _, errors in outputs] == ["0"] * 4
    grants = [int(count) for count, _ in outputs]
    expected = rpm / 60 * seconds + rpm / 60 * burst
    assert sum(grants) == pytest.approx(expected, rel=0.03), grants
    assert min(grants) > 0


async def test_redis_down_paces_locally_then_sharing_resumes(
    redis_server: RedisServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    spec = LimitSpec(rpm=600, tpm=None, burst=0.5)
    first = RedisLimiter(spec, name="m", url=redis_server.url, clock=clock, backoff=1.0)
    second = RedisLimiter(spec, name="m", url=redis_server.url, clock=clock, backoff=1.0)
    assert await first.try_acquire(5, 0) == 0.0
    assert await second.try_acquire(1, 0) > 0.0

    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="overdrive.flow._redis_limiter"):
        # A fresh local bucket (FakeClock time): the burst, then the rate.
        answers = [await first.try_acquire(1, 0) for _ in range(6)]
        clock.advance(1.0)
        assert await first.try_acquire(1, 0) == 0.0  # tried Redis again: still down
    assert answers == [0.0] * 5 + [pytest.approx(0.1)]
    assert (first.down, first.outages, first.errors, first.local_calls) == (True, 1, 2, 7)
    assert len(caplog.records) == 1
    assert "Redis at redis://127.0.0.1" in caplog.records[0].getMessage()

    redis_server.start()  # same port, empty: the scripts must be loaded again
    clock.advance(1.0)
    assert await first.try_acquire(5, 0) == 0.0
    assert not first.down
    assert await second.try_acquire(1, 0) == pytest.approx(0.1, abs=TOLERANCE)
    assert (first.outages, second.outages) == (1, 0)
    await first.aclose()
    await second.aclose()


async def test_redis_killed_under_load_no_call_fails(redis_server: RedisServer) -> None:
    spec = LimitSpec(rpm=6000, tpm=None, burst=0.05)
    limiters = [
        RedisLimiter(spec, name="m", url=redis_server.url, backoff=0.1, timeout=0.1)
        for _ in range(2)
    ]
    grants_while_down = 0

    async def hammer(limiter: RedisLimiter, end: float) -> None:
        nonlocal grants_while_down
        while time.monotonic() < end:
            wait = await limiter.try_acquire(1, 0)
            grants_while_down += wait == 0.0 and limiter.down
            await asyncio.sleep(min(wait, 0.01))

    end = time.monotonic() + 1.2
    tasks = [asyncio.create_task(hammer(limiter, end)) for limiter in limiters]
    await asyncio.sleep(0.3)
    redis_server.kill()
    await asyncio.sleep(0.4)
    redis_server.start()
    await asyncio.gather(*tasks)  # any exception escaping a limiter fails here

    assert grants_while_down > 0
    assert [limiter.outages for limiter in limiters] == [1, 1]
    assert not any(limiter.down for limiter in limiters)
    for limiter in limiters:
        await limiter.aclose()


async def test_a_given_client_is_left_open(redis_server: RedisServer, raw: Redis) -> None:
    limiter = RedisLimiter(LimitSpec(60, None, 1.0), name="m", client=raw)
    assert isinstance(limiter, Limiter)
    assert await limiter.try_acquire(1, 0) == 0.0
    await limiter.aclose()
    assert await raw.ping()
    assert repr(limiter) == (
        f"RedisLimiter('m', LimitSpec(rpm=60, tpm=None, burst=1), "
        f"url='redis://127.0.0.1:{redis_server.port}', down=False, outages=0, errors=0, "
        f"local_calls=0)"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "expected a redis://"),
        ("redis://user:secret@127.0.0.1:port/0", "Port could not be cast"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
    ],
)
def test_a_bad_url_is_a_config_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        RedisLimiter(LimitSpec(60, None, 1.0), name="m", url=url)
    assert caught.value.field == "url"
    assert "secret" not in str(caught.value)


def test_url_or_client_and_a_plain_name_are_required() -> None:
    spec = LimitSpec(60, None, 1.0)
    with pytest.raises(ConfigError, match="exactly one of") as caught:
        RedisLimiter(spec, name="m")
    assert caught.value.field == "url"
    with pytest.raises(ConfigError, match="without braces") as caught:
        RedisLimiter(spec, name="a}b", url="redis://127.0.0.1:6379/0")
    assert caught.value.field == "name"
