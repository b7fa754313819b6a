"""Anthropic's rate-limit headers fed to the limiter, and its 429s and 529s met by the engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from overdrive import Overdrive
from overdrive.apis import MESSAGES
from overdrive.flow import LimitSpec, LocalLimiter, apply_feedback
from overdrive.flow._feedback import parse_reset_time
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, FakeUpstream, finish

NOW = 1_750_000_000.0  # the wall clock the reset times are read against


def wall() -> float:
    return NOW


def at(seconds: float) -> str:
    """An RFC 3339 time ``seconds`` after NOW, as Anthropic writes it."""
    return datetime.fromtimestamp(NOW + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def anthropic(dimension: str, limit: int, remaining: int, reset_in: float) -> dict[str, str]:
    prefix = f"anthropic-ratelimit-{dimension}-"
    return {
        prefix + "limit": str(limit),
        prefix + "remaining": str(remaining),
        prefix + "reset": at(reset_in),
    }


def limiter(clock: FakeClock, rpm: int | None = None, tpm: int | None = None) -> LocalLimiter:
    return LocalLimiter(LimitSpec(rpm=rpm, tpm=tpm, burst=1.0), clock)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2025-06-15T15:06:40Z", 0.0),
        ("2025-06-15T15:07:10Z", 30.0),
        ("2025-06-15T17:07:10+02:00", 30.0),
        ("2025-06-15T15:07:10.5Z", 30.5),
        ("2025-06-15T15:07:10", 30.0),  # no zone: UTC, as Anthropic's are
        ("2025-06-15T15:00:00Z", 0.0),  # passed already
    ],
)
def test_reset_times_are_read_as_seconds_from_now(text: str, seconds: float) -> None:
    assert at(0) == "2025-06-15T15:06:40Z"
    assert parse_reset_time(text, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "30s", "2025-13-01T00:00:00Z"])
def test_an_unreadable_reset_time_is_none(text: str | None) -> None:
    assert parse_reset_time(text, NOW) is None


async def test_no_requests_left_pauses_for_one_request(clock: FakeClock) -> None:
    paced = limiter(clock)
    headers = anthropic("requests", 50, 0, reset_in=30)
    assert await apply_feedback(paced, headers, tokens_cost=100, wall=wall)
    assert await paced.try_acquire(1, 0) == pytest.approx(60 / 50)  # one request's worth
    assert paced.spec.rpm == 50  # and the limit is learnt


async def test_the_pause_never_outlasts_the_reset(clock: FakeClock) -> None:
    paced = limiter(clock)
    headers = anthropic("tokens", 1_000, 0, reset_in=2)
    await apply_feedback(paced, headers, tokens_cost=5_000, wall=wall)  # 5 minutes of tokens
    assert await paced.try_acquire(1, 0) == pytest.approx(2.0)


@pytest.mark.parametrize("dimension", ["tokens", "input-tokens", "output-tokens"])
async def test_any_token_dimension_with_nothing_left_pauses(
    clock: FakeClock, dimension: str
) -> None:
    paced = limiter(clock)
    await apply_feedback(
        paced, anthropic(dimension, 60_000, 0, reset_in=60), tokens_cost=500, wall=wall
    )
    assert await paced.try_acquire(1, 0) == pytest.approx(0.5)  # 500 tokens at 1000/s


async def test_input_and_output_limits_add_up_to_the_one_token_budget(clock: FakeClock) -> None:
    paced = limiter(clock, rpm=1_000, tpm=500_000)
    headers = {
        **anthropic("requests", 4_000, 3_999, reset_in=1),
        **anthropic("tokens", 80_000, 79_000, reset_in=1),
        **anthropic("input-tokens", 400_000, 399_000, reset_in=1),
        **anthropic("output-tokens", 80_000, 79_500, reset_in=1),
    }
    assert await apply_feedback(paced, headers, tokens_cost=10, wall=wall)
    # rpm: the configured 1000 is lower than reported and stays; tpm: 400k + 80k.
    assert (paced.spec.rpm, paced.spec.tpm) == (1_000, 480_000)
    assert await paced.try_acquire(1, 0) == 0.0  # room in every dimension: no pause
    # Only the most restrictive "tokens" figure: that is the budget.
    only = limiter(clock)
    await apply_feedback(only, anthropic("tokens", 80_000, 100, 1), tokens_cost=1, wall=wall)
    assert only.spec.tpm == 80_000


async def test_higher_or_garbled_figures_change_nothing(clock: FakeClock) -> None:
    paced = limiter(clock, rpm=50)
    assert not await apply_feedback(
        paced, anthropic("requests", 4_000, 10, reset_in=5), tokens_cost=1, wall=wall
    )
    garbled = {
        "anthropic-ratelimit-requests-limit": "many",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "tomorrow",
    }
    assert not await apply_feedback(paced, garbled, tokens_cost=1, wall=wall)
    assert paced.spec.rpm == 50
    assert await paced.try_acquire(1, 0) == 0.0


async def test_openai_figures_are_read_first_and_alone(clock: FakeClock) -> None:
    paced = limiter(clock)
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "10",
        **anthropic("requests", 5, 0, reset_in=60),
    }
    await apply_feedback(paced, headers, tokens_cost=1, wall=wall)
    assert paced.spec.rpm == 600
    assert await paced.try_acquire(1, 0) == 0.0


# -- as the engine meets them ----------------------------------------------------------


def build(fake: FakeServer, clock: FakeClock, **retry: Any) -> Overdrive:
    upstream = {"name": "claude", "base_url": fake.url, "api": "anthropic", "models": ["claude-x"]}
    config: dict[str, Any] = {
        "upstreams": [upstream],
        "cache": {"enabled": False},
        "retry": {"base": "100ms", "cap": "1s", **retry},
    }
    return Overdrive.from_config(config, clock=clock)


def message_call(text: str) -> Any:
    return MESSAGES.call(
        {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    )


def message(headers: dict[str, str] | None = None, code: int = 200) -> Any:
    payload: dict[str, Any] = {
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    if code != 200:
        payload = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    return lambda request: httpx.Response(code, json=payload, headers=headers)


async def test_exhausted_anthropic_headers_pause_the_next_call(clock: FakeClock) -> None:
    exhausted = {
        "anthropic-ratelimit-requests-limit": "60",
        "anthropic-ratelimit-requests-remaining": "0",
        # Measured on the wall clock, far off: the pause is one request's worth, not this.
        "anthropic-ratelimit-requests-reset": "2999-01-01T00:00:00Z",
    }
    fake = FakeUpstream(clock, script=[message(exhausted)])
    async with fake, build(fake, clock) as od:
        await finish(clock, od.request(message_call("one")))
        await finish(clock, od.request(message_call("two")))
    times = [t for t, _, _ in fake.calls]
    assert times[1] - times[0] == pytest.approx(1.0, abs=0.06)


async def test_a_529_overloaded_is_retried_like_a_503(clock: FakeClock) -> None:
    fake = FakeUpstream(clock, script=[message(code=529), message(code=529), message()])
    async with fake, build(fake, clock) as od:
        result = await finish(clock, od.request(message_call("busy?")))
        assert result.status == 200
        assert len(fake.calls) == 3
        assert od.metrics.value("overdrive_retries_total", upstream="claude") == 2


async def test_a_429_is_waited_out_for_its_retry_after(clock: FakeClock) -> None:
    limited = message({"retry-after": "3"}, code=429)
    fake = FakeUpstream(clock, script=[limited, message()])
    async with fake, build(fake, clock) as od:
        result = await finish(clock, od.request(message_call("later")))
    assert result.status == 200
    times = [t for t, _, _ in fake.calls]
    assert times[1] - times[0] == pytest.approx(3.0, abs=0.06)
