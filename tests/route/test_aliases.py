"""Model aliases (``[[models]]``): config checks, resolution, the shared cache key, listing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from overdrive import ConfigError, Overdrive
from overdrive._calls import chat_call
from overdrive.cache import call_key
from overdrive.config import load_config
from overdrive.doors import answer
from overdrive.route import aliases_of, retarget
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream, finish

HELLO: Any = [{"role": "user", "content": "hello"}]


def config(models: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    openai = {"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["mini", "big", "e"]}
    claude = {"name": "c", "base_url": "http://127.0.0.1:2/v1", "models": ["claude"]}
    return {"upstreams": [openai, {**claude, "api": "anthropic"}], "models": models, **more}


@pytest.mark.parametrize(
    ("models", "field", "problem"),
    [
        ([{"name": ""}], "models[0].name", "at least 1 character"),
        ([{"name": "fast"}], "models[0].targets", "no upstream serves 'fast'"),
        ([{"name": "fast", "targets": ["nano"]}], "models[0].targets[0]", "'nano'"),
        ([{"name": "big", "fallbacks": ["mini", "gone"]}], "models[0].fallbacks[1]", "'gone'"),
        ([{"name": "fast", "targets": ["mini", "mini"]}], "models[0].targets[1]", "twice"),
        ([{"name": "big", "fallbacks": ["big"]}], "models[0].fallbacks[0]", "twice"),
        (
            [{"name": "fast", "targets": ["mini"], "fallbacks": ["  "]}],
            "models[0].fallbacks",
            "non-empty",
        ),
        (
            [{"name": "f", "targets": ["mini"]}, {"name": "f", "targets": ["big"]}],
            "models[1].name",
            "duplicate name 'f'",
        ),
        (
            [{"name": "fast", "targets": ["mini"], "fallbacks": ["claude"]}],
            "models[0].fallbacks[0]",
            "must share one API",
        ),
        (
            [{"name": "mini", "fallbacks": ["big"]}, {"name": "big", "fallbacks": ["mini"]}],
            "models[0]",
            "cycle: mini → big → mini",
        ),
    ],
)
def test_a_bad_alias_is_a_config_error_naming_its_field(
    models: list[dict[str, Any]], field: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(config(models))
    assert info.value.field == field


def test_aliases_load_from_toml_and_chain_targets_then_fallbacks(tmp_path: Path) -> None:
    path = tmp_path / "overdrive.toml"
    path.write_text(
        '[[upstreams]]\nname = "a"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["mini", "big", "nano"]\n\n'
        '[[models]]\nname = "fast"\ntargets = ["mini", "nano"]\nfallbacks = ["big"]\n\n'
        '[[models]]\nname = "big"\nfallbacks = ["mini"]\n'
    )
    loaded = load_config(path)
    assert [a.chain() for a in loaded.aliases] == [["mini", "nano", "big"], ["big", "mini"]]
    assert loaded.models() == ["mini", "big", "nano", "fast"]


def test_a_chain_through_an_alias_name_without_a_loop_is_allowed() -> None:
    # `fast` goes as `big`, tried as named: `big`'s own fallbacks are not followed.
    models = [{"name": "fast", "targets": ["big"]}, {"name": "big", "fallbacks": ["mini"]}]
    table = aliases_of(load_config(config(models)).aliases)
    assert (table["fast"].model, table["fast"].fallbacks) == ("big", ())


def test_resolution_rewrites_the_model_and_leaves_the_callers_body_alone() -> None:
    table = aliases_of(load_config(config([{"name": "fast", "targets": ["mini"]}])).aliases)
    body = {"model": "fast", "messages": HELLO}
    resolved = table["fast"].apply(chat_call(body))
    assert (resolved.model, resolved.body["model"], resolved.fallbacks) == ("mini", "mini", ())
    assert body["model"] == "fast"
    again = retarget(resolved, "mini")
    assert again.body is resolved.body  # the same model: no copy


def test_an_alias_and_its_model_share_one_cache_key() -> None:
    models = [{"name": "fast", "targets": ["mini"], "fallbacks": ["big"]}]
    table = aliases_of(load_config(config(models)).aliases)
    by_alias = table["fast"].apply(chat_call({"model": "fast", "messages": HELLO}))
    direct = chat_call({"model": "mini", "messages": HELLO})
    other = chat_call({"model": "big", "messages": HELLO})
    assert call_key(by_alias, "") == call_key(direct, "")
    assert call_key(by_alias, "") != call_key(other, "")


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(clock) as upstream:
        yield upstream


def engine_with_alias(fake: FakeUpstream, clock: FakeClock) -> Overdrive:
    upstream = {"name": "a", "base_url": fake.url, "models": ["mini", "big"]}
    models = [{"name": "fast", "targets": ["mini"]}, {"name": "big", "fallbacks": ["mini"]}]
    return Overdrive.from_config({"upstreams": [upstream], "models": models}, clock=clock)


async def test_a_call_of_an_alias_is_sent_as_its_model_and_shares_its_answers(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    async with engine_with_alias(fake, clock) as od:
        first = await finish(clock, od.request(chat_call({"model": "fast", "messages": HELLO})))
        second = await finish(clock, od.request(chat_call({"model": "mini", "messages": HELLO})))
    assert [body["model"] for _, _, body in fake.calls] == ["mini"]
    assert (first.model, first.source) == ("mini", "upstream")
    assert (second.model, second.source, second.body) == ("mini", "cache", first.body)
    assert od.metrics.value("overdrive_upstream_requests_total", upstream="a", op="chat") == 1


async def test_models_lists_the_aliases_after_the_upstreams_models(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    async with engine_with_alias(fake, clock) as od:
        listed = await answer(od, "models", {}, b"")
        assert od.models() == ["mini", "big", "fast"]
    assert [m["id"] for m in json.loads(listed.body)["data"]] == od.models()


async def test_the_door_names_the_model_that_served_the_answer(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    body = b'{"model": "fast", "messages": [{"role": "user", "content": "hi"}]}'
    async with engine_with_alias(fake, clock) as od:
        sent = await finish(clock, answer(od, "chat", {}, body))
        hit = await finish(clock, answer(od, "chat", {}, body))
    assert (sent.headers["x-overdrive-model"], hit.headers["x-overdrive-model"]) == ("mini",) * 2
    assert hit.headers["x-overdrive-cache"] == "HIT"
    assert sent.model == "fast"  # the access log keeps the name the caller used
