"""Virtual API keys: config checks, lookup by hash, per-key limits on an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from overdrive import ConfigError
from overdrive._calls import Result, chat_call
from overdrive.config import load_config
from overdrive.gateway import KeyLimitError, ModelNotAllowedError, hash_key
from overdrive.gateway._tenants import Tenant, Tenants, _limiter
from overdrive.testing import FakeClock
from tests.fakes import finish

SECRET = "sk-team-a-0123456789"
UPSTREAM = {"name": "a", "base_url": "http://u/v1", "models": ["m", "n"]}


def config_with(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"upstreams": [UPSTREAM], "gateway": {"keys": list(keys)}}


def tenants(clock: FakeClock, *keys: dict[str, Any]) -> Tenants:
    return Tenants(load_config(config_with(*keys)), clock)


def tenant(clock: FakeClock, **key: Any) -> Tenant:
    found = tenants(clock, {"name": "a", "key_sha256": hash_key(SECRET), **key}).find(
        {"authorization": f"Bearer {SECRET}"}
    )
    assert found is not None
    return found


def call(tokens: int = 10, model: str = "m") -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens}
    return chat_call(body)


def test_a_key_is_found_by_its_hash_whatever_the_bearer_case(clock: FakeClock) -> None:
    keys = tenants(clock, {"name": "a", "key_sha256": hash_key(SECRET).upper()})
    assert keys.required
    for scheme in ("Bearer", "bearer", "BEARER"):
        found = keys.find({"authorization": f"{scheme} {SECRET}"})
        assert found is not None
        assert found.name == "a"
    assert keys.find({"authorization": f"Bearer {SECRET}x"}) is None
    assert keys.find({"authorization": SECRET}) is None
    assert keys.find({}) is None


def test_a_key_from_the_environment_is_hashed_and_not_kept(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_A_KEY", SECRET)
    config = load_config(config_with({"name": "a", "key_env": "TEAM_A_KEY"}))
    keys = Tenants(config, clock)
    assert keys.find({"authorization": f"Bearer {SECRET}"}) is not None
    for text in (repr(config), repr(keys), config.model_dump_json()):
        assert SECRET not in text


def test_without_keys_nobody_needs_one(clock: FakeClock) -> None:
    assert not tenants(clock).required


@pytest.mark.parametrize(
    ("key", "field", "problem"),
    [
        ({"name": "a"}, "gateway.keys.a", "exactly one of key_sha256 or key_env"),
        (
            {"name": "a", "key_sha256": hash_key("x"), "key_env": "X"},
            "gateway.keys.a",
            "exactly one",
        ),
        ({"name": "a", "key_sha256": "abc"}, "gateway.keys[0].key_sha256", "pattern"),
        ({"name": "a", "key_env": "OVERDRIVE_TEST_UNSET"}, "gateway.keys[0].key_env", "not set"),
        ({"name": "a b", "key_sha256": hash_key("x")}, "gateway.keys[0].name", "pattern"),
        (
            {"name": "a", "key_sha256": hash_key("x"), "models": ["zzz"]},
            "gateway.keys[0].models",
            "no upstream serves zzz",
        ),
        ({"name": "a", "key_sha256": hash_key("x"), "rpm": 0}, "gateway.keys[0].rpm", "greater"),
    ],
)
def test_bad_keys_name_the_field(key: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_with(key))
    assert info.value.field == field
    assert problem in info.value.problem


def test_duplicate_names_and_shared_secrets_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate name 'a'"):
        load_config(
            config_with(
                {"name": "a", "key_sha256": hash_key("x")},
                {"name": "a", "key_sha256": hash_key("y")},
            )
        )
    with pytest.raises(ConfigError, match="'b' has the same secret as 'a'"):
        load_config(
            config_with(
                {"name": "a", "key_sha256": hash_key("x")},
                {"name": "b", "key_sha256": hash_key("x")},
            )
        )


async def test_a_key_over_its_rpm_is_refused_with_the_wait(clock: FakeClock) -> None:
    team = tenant(clock, rpm=60, burst="2s")  # one a second, two at once
    assert [await team.admit(call()) for _ in range(2)] == [0.0, 0.0]
    with pytest.raises(KeyLimitError) as info:
        await team.admit(call())
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.key == "a"
    clock.advance(1.0)
    assert await team.admit(call()) == 0.0


async def test_max_wait_waits_for_room_instead_of_refusing(clock: FakeClock) -> None:
    team = tenant(clock, rpm=60, burst="1s", max_wait="1.5s")
    await team.admit(call())
    assert await finish(clock, team.admit(call())) == pytest.approx(1.0, abs=0.06)
    hasty = tenant(clock, rpm=60, burst="1s", max_wait="0.5s")
    await hasty.admit(call())
    with pytest.raises(KeyLimitError):  # a second away: longer than it may wait
        await hasty.admit(call())


async def test_tpm_books_the_estimate_then_the_reported_usage(clock: FakeClock) -> None:
    team = tenant(clock, tpm=600, burst="3s")  # ten tokens a second, thirty at once
    big = call(tokens=200)
    assert await team.admit(big) == 0.0  # larger than the burst: goes once the bucket is full
    with pytest.raises(KeyLimitError) as info:
        await team.admit(call(tokens=5))
    assert info.value.retry_after > 10.0
    # The answer used 7 tokens in all: the rest of the booking is given back.
    usage = b'{"usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}'
    await team.settle(big, Result(200, usage, "a"))
    assert await team.admit(call(tokens=1)) == 0.0


async def test_a_cached_answer_costs_the_key_no_tokens(clock: FakeClock) -> None:
    team = tenant(clock, tpm=600, burst="1s")
    big = call(tokens=200)
    await team.admit(big)
    await team.settle(big, Result(200, b"{}", "a", source="cache"))
    assert await team.admit(call(tokens=1)) == 0.0


async def test_a_key_may_be_limited_to_some_models(clock: FakeClock) -> None:
    team = tenant(clock, models=["m"])
    assert await team.admit(call(model="m")) == 0.0
    with pytest.raises(ModelNotAllowedError, match="may not use model 'n'"):
        await team.admit(call(model="n"))


def test_each_key_has_its_own_cache_namespace_unless_it_names_one(clock: FakeClock) -> None:
    keys = tenants(
        clock,
        {"name": "a", "key_sha256": hash_key("x")},
        {"name": "b", "key_sha256": hash_key("y"), "cache_namespace": "shared"},
    )
    assert sorted(t.namespace for t in keys) == ["a", "shared"]


def test_a_limited_key_shares_its_limiter_through_redis_when_configured(
    clock: FakeClock,
) -> None:
    key = {"name": "a", "key_sha256": hash_key("x"), "rpm": 120}
    config = load_config({**config_with(key), "redis_url": "redis://127.0.0.1:1"})
    limiter = _limiter(config.gateway.keys[0], config, clock)
    assert type(limiter).__name__ == "RedisLimiter"
    assert _limiter(load_config(config_with(key)).gateway.keys[0], config, clock) is not None
    unlimited = load_config(config_with({"name": "a", "key_sha256": hash_key("x")}))
    assert _limiter(unlimited.gateway.keys[0], unlimited, clock) is None
