"""Routing by API: a call goes only to upstreams that speak its API, with that API's headers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from overdrive import ConfigError, Overdrive, UnknownModelError
from overdrive._calls import Call
from overdrive.apis import CHAT, COUNT_TOKENS, MESSAGES, Api
from overdrive.config import load_config
from overdrive.route import DEFAULT_API, Router
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, finish

SSE = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@dataclass
class Endpoint:
    name: str
    models: list[str]
    api: str = DEFAULT_API
    calls: list[str] = field(default_factory=list)


def router(*endpoints: Endpoint) -> Router[Endpoint]:
    return Router(list(endpoints), api=lambda e: e.api)


def test_a_call_picks_only_among_deployments_of_its_api() -> None:
    oai = Endpoint("oai", ["shared", "gpt"])
    claude = Endpoint("claude", ["shared", "claude-x"], api="anthropic")
    claude_two = Endpoint("claude-2", ["shared"], api="anthropic")
    routes = router(oai, claude, claude_two)
    for _ in range(50):
        assert routes.pick("shared") is oai  # the default API: openai
        assert routes.pick("shared", None, "anthropic") in (claude, claude_two)
    # Avoiding the only other deployment of the API never falls over to another API.
    assert routes.pick("shared", claude, "anthropic") is claude_two
    assert routes.pick("claude-x", claude, "anthropic") is claude


def test_what_is_served_is_told_per_api_and_for_all() -> None:
    routes = router(
        Endpoint("oai", ["gpt", "shared"]), Endpoint("c", ["shared", "cx"], "anthropic")
    )
    assert routes.models() == ["gpt", "shared", "cx"]
    assert routes.models("anthropic") == ["shared", "cx"]
    assert routes.models("nobody") == []
    assert routes.serves("cx")
    assert routes.serves("cx", "anthropic")
    assert not routes.serves("cx", "openai")
    assert not routes.serves("gpt", "anthropic")


def test_a_model_of_another_api_is_an_error_naming_both() -> None:
    routes = router(Endpoint("oai", ["gpt"]), Endpoint("c", ["cx"], "anthropic"))
    with pytest.raises(UnknownModelError) as info:
        routes.pick("gpt", None, "anthropic")
    error = info.value
    assert (error.field, error.model, error.api, error.known) == (
        "model",
        "gpt",
        "anthropic",
        ["cx"],
    )
    assert "no anthropic upstream serves 'gpt'" in str(error)
    assert "openai upstreams serve it" in str(error)
    with pytest.raises(UnknownModelError, match="no openai upstream serves 'nope'"):
        routes.pick("nope")


def test_one_api_alone_keeps_the_plain_error() -> None:
    routes = router(Endpoint("oai", ["gpt"]))
    with pytest.raises(UnknownModelError) as info:
        routes.pick("nope")
    assert info.value.api is None
    assert str(info.value).endswith("no upstream serves 'nope'; configured models: ['gpt']")
    # A call of an API no upstream speaks names it, even so.
    with pytest.raises(UnknownModelError, match="no anthropic upstream serves 'gpt'"):
        routes.pick("gpt", None, "anthropic")


def test_ejection_shares_are_counted_within_one_api_s_pool() -> None:
    oai = Endpoint("oai", ["shared"])
    claude = Endpoint("claude", ["shared"], api="anthropic")
    routes = router(oai, claude)
    # Each pool has one deployment: neither may be ejected, however it fails.
    for _ in range(20):
        attempt = routes.attempt(claude, "shared")
        attempt.sent()
        attempt.answered(500)
        attempt.end()
    assert routes.health()["claude"]["state"] == "healthy"
    assert routes.pick("shared", None, "anthropic") is claude


def test_the_upstream_api_is_configured_and_checked() -> None:
    base = {"name": "c", "base_url": "https://api.anthropic.com/v1", "models": ["cx"]}
    config = load_config({"upstreams": [{**base, "api": "anthropic"}]})
    assert (config.upstreams[0].api, config.upstreams[0].anthropic_version) == (
        "anthropic",
        "2023-06-01",
    )
    assert load_config({"upstreams": [base]}).upstreams[0].api == "openai"
    with pytest.raises(ConfigError) as info:
        load_config({"upstreams": [{**base, "api": "gemini"}]})
    assert info.value.field == "upstreams[0].api"


# -- the engine: calls routed by API, each upstream sent its API's headers -------------


@pytest.fixture
def keys() -> Iterator[None]:
    os.environ["TEST_OAI_KEY"], os.environ["TEST_CLAUDE_KEY"] = "sk-oai", "sk-ant"
    yield
    del os.environ["TEST_OAI_KEY"], os.environ["TEST_CLAUDE_KEY"]


def answer(request: httpx.Request) -> httpx.Response:
    if request.method == "GET":
        return httpx.Response(200, json={"data": []})
    if b'"stream":true' in request.content:
        return httpx.Response(200, content=SSE, headers={"content-type": "text/event-stream"})
    usage = {"input_tokens": 3, "output_tokens": 1, "prompt_tokens": 3, "completion_tokens": 1}
    return httpx.Response(200, json={"type": "message", "content": [], "usage": usage})


def build(oai: FakeServer, claude: FakeServer, clock: FakeClock) -> Overdrive:
    upstreams: list[dict[str, Any]] = [
        {
            "name": "oai",
            "base_url": oai.url,
            "models": ["shared", "gpt"],
            "api_key_env": "TEST_OAI_KEY",
        },
        {
            "name": "claude",
            "base_url": claude.url,
            "api": "anthropic",
            "anthropic_version": "2024-10-22",
            "models": ["shared", "claude-x"],
            "api_key_env": "TEST_CLAUDE_KEY",
        },
    ]
    config = {"upstreams": upstreams, "cache": {"enabled": False}}
    return Overdrive.from_config(config, clock=clock)


def ask(api: Api, model: str, **extra: Any) -> Call:
    turns = [{"role": "user", "content": "hi"}]
    if api is COUNT_TOKENS:
        return api.call({"model": model, "messages": turns})
    return api.call({"model": model, "max_tokens": 8, "messages": turns, **extra})


@pytest.mark.usefixtures("keys")
async def test_each_call_reaches_only_an_upstream_of_its_api(clock: FakeClock) -> None:
    async with (
        FakeServer(answer) as oai,
        FakeServer(answer) as claude,
        build(oai, claude, clock) as od,
    ):
        for _ in range(6):  # "shared" is served by both: each call goes to its own API's
            assert (await finish(clock, od.request(ask(CHAT, "shared")))).upstream == "oai"
            assert (await finish(clock, od.request(ask(MESSAGES, "shared")))).upstream == "claude"
        assert (await finish(clock, od.request(ask(COUNT_TOKENS, "claude-x")))).upstream == "claude"
        with pytest.raises(UnknownModelError, match="no anthropic upstream serves 'gpt'"):
            await finish(clock, od.request(ask(MESSAGES, "gpt")))
        with pytest.raises(UnknownModelError, match="no openai upstream serves 'claude-x'"):
            await finish(clock, od.request(ask(CHAT, "claude-x")))
    assert {r.url.path for r in oai.requests} == {"/v1/chat/completions"}
    assert {r.url.path for r in claude.requests} == {"/v1/messages", "/v1/messages/count_tokens"}


@pytest.mark.usefixtures("keys")
async def test_a_stream_of_another_api_s_model_is_refused_naming_the_api(clock: FakeClock) -> None:
    async with (
        FakeServer(answer) as oai,
        FakeServer(answer) as claude,
        build(oai, claude, clock) as od,
    ):
        with pytest.raises(UnknownModelError, match="no anthropic upstream serves 'gpt'"):
            await od.open_stream(ask(MESSAGES, "gpt", stream=True))  # no clock step needed
    assert oai.requests == claude.requests == []


@pytest.mark.usefixtures("keys")
async def test_an_anthropic_upstream_gets_x_api_key_and_its_version_never_a_bearer(
    clock: FakeClock,
) -> None:
    async with (
        FakeServer(answer) as oai,
        FakeServer(answer) as claude,
        build(oai, claude, clock) as od,
    ):
        await finish(clock, od.request(ask(MESSAGES, "claude-x")))  # the lean client
        reply = await finish(clock, od.open_stream(ask(MESSAGES, "claude-x", stream=True)))  # httpx
        assert await reply.aread() == SSE
        await reply.aclose()
        claude_upstream = next(u for u in od.upstreams() if u.name == "claude")
        assert await claude_upstream.probe("/models", 5.0)  # httpx, GET
        await finish(clock, od.request(ask(CHAT, "gpt")))
    assert [r.method for r in claude.requests] == ["POST", "POST", "GET"]
    for request in claude.requests:
        assert request.headers["x-api-key"] == "sk-ant"
        assert request.headers["anthropic-version"] == "2024-10-22"
        assert "authorization" not in request.headers
    (sent,) = oai.requests
    assert sent.headers["authorization"] == "Bearer sk-oai"
    assert "x-api-key" not in sent.headers
