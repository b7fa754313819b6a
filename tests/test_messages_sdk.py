"""The real anthropic SDK against the real sim: through ``od.http_client()`` and the gateway."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import pytest

from overdrive import Overdrive
from overdrive._calls import Result
from overdrive._json import dumps
from overdrive.apis import MESSAGES
from overdrive.config import load_config
from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.gateway._tenants import Tenants
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock

CLAUDE = "claude-sim"
SIM_KEY = "sk-ant-sim-7e21"
TEAM_KEY = "sk-team-a-90f1"
HELLO: Any = [{"role": "user", "content": "Say hello to the Messages API."}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Today's weather in a city",
    "input_schema": {
        "type": "object",
        "required": ["city"],
        "properties": {"city": {"type": "string"}},
    },
}
MANUAL: Any = [
    {
        "type": "text",
        "text": "The harbor manual, every chapter of it. " * 120,
        "cache_control": {"type": "ephemeral"},
    }
]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    # Slow enough that identical calls made at once overlap upstream.
    config = SimConfig(seed=3, ttft_s=0.05, per_token_s=0.001, api_key=SIM_KEY, models=(CLAUDE,))
    os.environ["TEST_SIM_ANTHROPIC_KEY"] = SIM_KEY
    with SimServer(config) as server:
        yield server
    del os.environ["TEST_SIM_ANTHROPIC_KEY"]


def upstream(sim: SimServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": "claude",
        "base_url": sim.base_url,
        "api": "anthropic",
        "api_key_env": "TEST_SIM_ANTHROPIC_KEY",
        "models": [CLAUDE],
        **extra,
    }


@pytest.fixture
async def od(sim: SimServer) -> AsyncIterator[Overdrive]:
    config = {"upstreams": [upstream(sim, rpm=6000)], "retry": {"base": "10ms"}}
    async with Overdrive.from_config(config) as engine:
        yield engine


def through(od: Overdrive) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="unused",  # the engine sends the upstream's own key
        base_url="http://127.0.0.1:9",  # a dead port: the engine routes by model instead
        max_retries=0,
        http_client=od.http_client(),
    )


def direct(sim: SimServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=SIM_KEY, base_url=sim.url, max_retries=0)


def text_of(message: anthropic.types.Message) -> str:
    """The text of a one-block answer (and that it is text)."""
    (block,) = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


def upstream_calls(sim: SimServer) -> int:
    requests: dict[str, int] = sim.stats()["requests"]
    return requests.get("/v1/messages", 0)


# -- through od.http_client() ------------------------------------------------------------


def test_the_sync_client_through_the_sync_door(sim: SimServer) -> None:
    """``anthropic.Anthropic`` on ``od.http_client(sync=True)``: cached, coalesced, streamed."""
    ask: Any = [{"role": "user", "content": "Asked from many threads at once."}]
    od = Overdrive.from_config({"upstreams": [upstream(sim, rpm=6000)]})
    try:
        with anthropic.Anthropic(
            api_key="unused",
            base_url="http://127.0.0.1:9",
            max_retries=0,
            http_client=od.http_client(sync=True),
        ) as client:
            before = upstream_calls(sim)

            def one(_: int) -> str:
                return text_of(client.messages.create(model=CLAUDE, max_tokens=200, messages=ask))

            with ThreadPoolExecutor(4) as threads:
                texts = set(threads.map(one, range(8)))
            raw = client.messages.with_raw_response.create(
                model=CLAUDE, max_tokens=200, messages=ask
            )
            with client.messages.stream(model=CLAUDE, max_tokens=200, messages=ask) as stream:
                streamed = "".join(stream.text_stream)
        assert len(texts) == 1
        assert raw.headers["x-overdrive-cache"] == "HIT"
        assert streamed == texts.pop()
        # 8 whole calls from 4 threads and a repeat: one upstream call, and one for the stream.
        assert upstream_calls(sim) - before == 2
    finally:
        od.close()


async def test_the_same_answer_direct_and_through_overdrive(sim: SimServer, od: Overdrive) -> None:
    async with direct(sim) as plain_client, through(od) as client:
        plain = await plain_client.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
        routed = await client.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert routed.content == plain.content
    assert routed.stop_reason == plain.stop_reason == "end_turn"
    assert routed.usage.output_tokens == plain.usage.output_tokens > 0


async def test_streams_both_ways_and_a_stored_one_replays(sim: SimServer, od: Overdrive) -> None:
    ask: Any = [{"role": "user", "content": "Stream me a short line."}]
    async with through(od) as client:
        whole = await client.messages.create(model=CLAUDE, max_tokens=64, messages=ask)
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=ask) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        calls = upstream_calls(sim)
        kinds = []
        async for event in await client.messages.create(
            model=CLAUDE, max_tokens=64, messages=ask, stream=True
        ):
            kinds.append(event.type)
        assert upstream_calls(sim) == calls  # the stored stream replayed: no upstream call
    assert "".join(pieces) == text_of(whole)
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.stop_reason == "end_turn"
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds


async def test_a_repeat_is_answered_from_the_cache(sim: SimServer, od: Overdrive) -> None:
    ask: Any = [{"role": "user", "content": "Remember this one."}]
    async with through(od) as client:
        marks: list[str] = []
        for _ in range(2):
            raw = await client.messages.with_raw_response.create(
                model=CLAUDE, max_tokens=32, messages=ask, metadata={"user_id": f"u-{len(marks)}"}
            )
            await raw.parse()
            marks.append(raw.headers["x-overdrive-cache"])
        calls = upstream_calls(sim)
        await client.messages.create(model=CLAUDE, max_tokens=32, messages=ask)
    assert marks == ["MISS", "HIT"]  # another end user's id is the same call
    assert upstream_calls(sim) == calls


async def test_identical_concurrent_calls_share_one_upstream_call(
    sim: SimServer, od: Overdrive
) -> None:
    ask: Any = [{"role": "user", "content": "Everyone asks this at once."}]
    before = upstream_calls(sim)
    async with through(od) as client:
        answers = await asyncio.gather(
            *(client.messages.create(model=CLAUDE, max_tokens=200, messages=ask) for _ in range(6))
        )
    assert upstream_calls(sim) == before + 1
    assert len({text_of(a) for a in answers}) == 1
    assert od.metrics.value("overdrive_coalesced_total", op="messages") == 5


async def test_a_tool_use_round_trip(od: Overdrive) -> None:
    ask: Any = [{"role": "user", "content": "Ask get_weather about Lisbon, please."}]
    async with through(od) as client:
        first = await client.messages.create(
            model=CLAUDE, max_tokens=256, messages=ask, tools=[WEATHER]
        )
        assert first.stop_reason == "tool_use"
        (use,) = first.content
        assert use.type == "tool_use"
        assert use.name == "get_weather"
        assert isinstance(use.input, dict)
        assert set(use.input) == {"city"}
        turns: Any = [
            *ask,
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24°C"}
                ],
            },
        ]
        async with client.messages.stream(
            model=CLAUDE, max_tokens=256, messages=turns, tools=[WEATHER]
        ) as stream:
            answer = await stream.get_final_message()
    assert answer.stop_reason == "end_turn"
    assert text_of(answer)


async def test_errors_reach_the_sdk_as_its_own_exceptions(od: Overdrive) -> None:
    async with through(od) as client:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.create(model="claude-unknown", max_tokens=8, messages=HELLO)
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(model=CLAUDE, max_tokens=0, messages=HELLO)
    assert missing.value.status_code == 404
    body = missing.value.body
    assert isinstance(body, dict)
    assert set(body) == {"type", "error"}
    assert body["error"]["type"] == "not_found_error"
    assert "claude-unknown" in body["error"]["message"]
    assert "max_tokens" in str(bad.value)
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["error"]["type"] == "invalid_request_error"


async def test_an_upstream_429_is_a_rate_limit_error_in_the_sdk() -> None:
    # Ten tokens a second, at most: a call that may take 100 is refused upstream, and the
    # 429 handed straight back (no waiting it out), so the SDK sees the upstream's own.
    config = SimConfig(ttft_s=0.0, per_token_s=0.0, tpm=600, burst_s=1.0)
    with SimServer(config) as limited:
        settings = {
            "upstreams": [{**upstream(limited), "api_key_env": None}],
            "retry": {"rate_limited_attempts": 0},
            "cache": {"enabled": False},
        }
        async with Overdrive.from_config(settings) as engine, through(engine) as client:
            with pytest.raises(anthropic.RateLimitError) as info:
                await client.messages.create(model=CLAUDE, max_tokens=100, messages=HELLO)
    assert info.value.status_code == 429
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "rate_limit_error"


async def test_usage_with_cache_tokens_is_counted_and_settled(
    sim: SimServer, od: Overdrive
) -> None:
    ask: Any = [{"role": "user", "content": "Which chapter covers mooring?"}]
    again: Any = [{"role": "user", "content": "And which one covers the tides?"}]
    async with through(od) as client:
        first = await client.messages.create(
            model=CLAUDE, max_tokens=16, system=MANUAL, messages=ask
        )
        second = await client.messages.create(
            model=CLAUDE, max_tokens=16, system=MANUAL, messages=again
        )
        counted = await client.messages.count_tokens(model=CLAUDE, system=MANUAL, messages=ask)
    written, read = first.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens
    assert written == read
    assert written is not None
    assert written > 1000
    reported = sum(
        u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
        for u in (first.usage, second.usage)
    )
    assert od.metrics.value("overdrive_tokens_total", op="messages", kind="prompt") == reported
    assert counted.input_tokens == first.usage.input_tokens + written


async def test_a_gateway_key_s_budget_is_settled_with_cache_tokens(clock: FakeClock) -> None:
    key = {"name": "team", "key_sha256": hash_key(TEAM_KEY), "tpm": 60_000, "burst": "1s"}
    upstreams = [
        {"name": "c", "base_url": "http://127.0.0.1:9/v1", "api": "anthropic", "models": [CLAUDE]}
    ]
    tenants = Tenants(load_config({"upstreams": upstreams, "gateway": {"keys": [key]}}), clock)
    tenant = tenants.find({"x-api-key": TEAM_KEY})
    assert tenant is not None
    call = MESSAGES.call({"model": CLAUDE, "max_tokens": 900, "messages": HELLO})
    await tenant.admit(call)  # books its estimate: about 910 of the 1000 a second holds
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 600,
        "output_tokens": 20,
    }
    await tenant.settle(call, Result(200, dumps({"type": "message", "usage": usage}), "c"))
    limiter = tenant._limiter
    assert limiter is not None
    # 630 used: 370 are free now. Had the cached 600 been left out, 970 would be.
    assert await limiter.try_acquire(1, 360) == 0.0
    assert await limiter.try_acquire(1, 50) > 0.0
    await tenants.aclose()


# -- through the gateway -------------------------------------------------------------------


def gateway_config(sim: SimServer, keys: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"upstreams": [upstream(sim)]}
    if keys is not None:
        config["gateway"] = {"keys": keys}
    return config


@pytest.fixture(scope="module")
def open_gateway(sim: SimServer) -> Iterator[GatewayServer]:
    with GatewayServer(GatewayApp(gateway_config(sim))) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_gateway(sim: SimServer) -> Iterator[GatewayServer]:
    keys = [{"name": "team-a", "key_sha256": hash_key(TEAM_KEY)}]
    with GatewayServer(GatewayApp(gateway_config(sim, keys))) as server:
        yield server


def test_the_gateway_serves_messages_whole_streamed_and_cached(open_gateway: GatewayServer) -> None:
    ask: Any = [{"role": "user", "content": "Hello through the gateway."}]
    with anthropic.Anthropic(api_key="unused", base_url=open_gateway.url, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=48, messages=ask)
        whole = raw.parse()
        repeat = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=48, messages=ask)
        with client.messages.stream(model=CLAUDE, max_tokens=48, messages=ask) as stream:
            streamed = "".join(stream.text_stream)
        kinds = [
            event.type
            for event in client.messages.create(
                model=CLAUDE, max_tokens=48, messages=ask, stream=True
            )
        ]
        with pytest.raises(anthropic.NotFoundError) as missing:
            client.messages.create(model="gpt-4o-mini", max_tokens=8, messages=ask)
    assert (raw.headers["x-overdrive-cache"], repeat.headers["x-overdrive-cache"]) == (
        "MISS",
        "HIT",
    )
    assert repeat.parse().content == whole.content
    assert streamed == text_of(whole)
    assert (kinds[0], kinds[-1]) == ("message_start", "message_stop")
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"


def test_the_gateway_takes_its_keys_in_x_api_key_or_as_a_bearer(
    keyed_gateway: GatewayServer,
) -> None:
    url = keyed_gateway.url
    # This SDK sends ``api_key`` as a Bearer token; older ones, and Claude Code, in x-api-key.
    with anthropic.Anthropic(api_key=TEAM_KEY, base_url=url, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=16, messages=HELLO)
        message = raw.parse()
        with client.messages.stream(model=CLAUDE, max_tokens=16, messages=HELLO) as stream:
            assert text_of(stream.get_final_message()) == text_of(message)
    assert raw.http_request.headers["authorization"] == f"Bearer {TEAM_KEY}"
    in_header = {"x-api-key": TEAM_KEY}
    with anthropic.Anthropic(default_headers=in_header, base_url=url, max_retries=0) as keyed:
        raw = keyed.messages.with_raw_response.create(model=CLAUDE, max_tokens=16, messages=HELLO)
        assert raw.parse().content == message.content
    assert "authorization" not in raw.http_request.headers
    with (
        anthropic.Anthropic(api_key="sk-not-a-key", base_url=url, max_retries=0) as stranger,
        pytest.raises(anthropic.AuthenticationError) as refused,
    ):
        stranger.messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)
    assert refused.value.status_code == 401
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "authentication_error"
    assert "sk-not-a-key" not in str(refused.value)
