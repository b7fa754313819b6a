"""The sim's automatic prompt prefix cache: alone, then through the app and the openai SDK."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from openai.types.responses import ResponseUsage

from overdrive import cli
from overdrive._asgi import Receive, Scope, Send
from overdrive._errors import ConfigError
from overdrive._tokens import estimate_tokens
from overdrive.sim import SimApp, SimConfig
from overdrive.sim._prefix_cache import (
    FRAMING_TOKENS,
    TOKEN_CHARS,
    PrefixCache,
    PromptTokens,
    framing,
    padded,
)
from overdrive.sim._requests import parse_chat
from overdrive.sim._responses import parse_responses
from overdrive.testing import FakeClock

T = TypeVar("T")

MODEL = "gpt-4o-mini"
LONG = "word " * 1600  # 8,000 characters: 2,000 tokens
SYSTEM = {"role": "system", "content": LONG}
ASK = {"role": "user", "content": "What is the capital of France?"}  # 4 + 8 tokens
CONVERSATION: list[Any] = [SYSTEM, ASK]
PROMPT_TOKENS = 4 + 2000 + 12  # 2,016: 15 whole blocks of 128
CACHED = 15 * 128
# Decoding is free, so a call's latency is its time to first token.
CACHING = SimConfig(
    ttft_s=0.1,
    per_token_s=0.0,
    jitter=0.0,
    prefill_per_token_s=0.001,
    prefix_cache_tokens=8192,
)


def chat(*messages: dict[str, Any], model: str = MODEL, **extra: Any) -> PromptTokens:
    return parse_chat({"model": model, "messages": list(messages), **extra}, None).prefix_tokens()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def words(tokens: int, word: str = "abc ") -> str:
    """A text of exactly ``tokens`` tokens (``word`` is one token long)."""
    return word * tokens


# -- the tokens of a prompt ---------------------------------------------------------------


def test_a_token_is_as_many_characters_as_the_sim_prices_it() -> None:
    assert estimate_tokens("x" * TOKEN_CHARS * 7) == 7
    assert estimate_tokens("x" * (TOKEN_CHARS * 7 + 1)) == 8
    assert len(padded("x" * (TOKEN_CHARS * 7 + 1))) == TOKEN_CHARS * 8
    assert len(framing({"role": "user"})) == FRAMING_TOKENS * TOKEN_CHARS


_TEXT = st.text(max_size=40)
_PART = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _TEXT),
    st.just({"type": "image_url", "image_url": {"url": "data:,"}}),
)
_MESSAGE = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["system", "user", "assistant", "tool"]),
    st.one_of(_TEXT, st.lists(_PART, max_size=3), st.none()),
)


@given(st.lists(_MESSAGE, min_size=1, max_size=6))
@settings(max_examples=200)
def test_a_chat_prompt_has_as_many_tokens_as_it_is_priced(messages: list[Any]) -> None:
    request = parse_chat({"model": MODEL, "messages": messages}, None)
    assert request.prefix_tokens().tokens == request.prompt_tokens


def test_a_responses_input_has_as_many_tokens_as_it_is_priced() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"c":1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Rain, 4 degrees."},
        {"type": "reasoning", "summary": []},
        {"role": "user", "content": "And tomorrow?"},
    ]
    request = parse_responses({"model": MODEL, "instructions": "Be brief!", "input": items}, None)
    assert request.prompt_tokens > 30
    assert request.prefix_tokens().tokens == request.prompt_tokens


def test_keys_are_chained_and_shared_only_over_a_shared_run_of_messages() -> None:
    system = {"role": "system", "content": words(300)}  # 304 tokens: blocks 0 and 1 whole
    first = chat(system, user(words(500))).block_keys(128)
    second = chat(system, user(words(500, "xyz "))).block_keys(128)
    assert len(first) == len(second) == 6  # 808 tokens
    assert first[:2] == second[:2]
    # Block 2 starts in the system prompt but ends in the user turn: from there on, all differ.
    assert all(a != b for a, b in zip(first[2:], second[2:], strict=True))


def test_a_different_early_message_changes_every_key() -> None:
    later = [user(words(400)), {"role": "assistant", "content": words(400)}]
    one = chat({"role": "system", "content": "You are terse."}, *later).block_keys(128)
    other = chat({"role": "system", "content": "You are kind."}, *later).block_keys(128)
    assert len(one) == len(other) == 6
    assert not set(one) & set(other)


def test_the_role_a_tool_call_and_the_model_and_tools_all_shape_the_keys() -> None:
    text = words(300)
    base = chat(user(text)).block_keys(128)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert chat({"role": "assistant", "content": text}).block_keys(128)[0] != base[0]
    assert chat(user(text), model="gpt-4o").block_keys(128)[0] != base[0]
    tool = {"type": "function", "function": {"name": "weather"}}
    assert chat(user(text), tools=[tool]).block_keys(128)[0] != base[0]
    with_call = {"role": "assistant", "content": None, "tool_calls": [call]}
    other_call = {**with_call, "tool_calls": [{**call, "id": "c2"}]}
    assert chat(with_call, user(text)).block_keys(128) != chat(other_call, user(text)).block_keys(
        128
    )


# -- the cache ----------------------------------------------------------------------------


def test_a_second_look_up_finds_the_whole_blocks_the_first_stored() -> None:
    cache = PrefixCache(8192)
    prompt = chat(user(words(1100)))  # 1,104 tokens: 8 whole blocks
    first = cache.look_up(prompt)
    assert (first.cached_tokens, first.uncached_tokens) == (0, 1104)
    assert cache.look_up(prompt).cached_tokens == 0  # nothing stored before the prefill is done
    first.done()
    again = cache.look_up(prompt)
    assert (again.cached_tokens, again.uncached_tokens) == (1024, 80)
    assert len(cache) == 8
    assert cache.cached_tokens == 1024


def test_a_growing_conversation_hits_its_previous_turn() -> None:
    cache = PrefixCache(1 << 16)
    turn = [SYSTEM, user(words(100))]  # 2,108 tokens
    cache.look_up(chat(*turn)).done()
    longer = [*turn, {"role": "assistant", "content": words(40)}, user(words(30))]
    hit = cache.look_up(chat(*longer))
    assert hit.prompt_tokens == 2108 + 44 + 34
    assert hit.cached_tokens == 2048  # turn one's 16 whole blocks


def test_a_prompt_shorter_than_the_minimum_is_neither_served_nor_stored() -> None:
    cache = PrefixCache(8192, min_tokens=1024)
    short = chat(user(words(1000)))  # 1,004 tokens
    cache.look_up(short).done()
    assert len(cache) == 0
    assert cache.look_up(short).cached_tokens == 0
    assert not cache.look_up(short).stores


def test_a_shared_run_shorter_than_the_minimum_is_not_a_hit() -> None:
    opening = {"role": "system", "content": words(600)}  # 604 tokens shared: 4 blocks
    strict, loose = PrefixCache(8192, min_tokens=1024), PrefixCache(8192, min_tokens=0)
    for cache in (strict, loose):
        cache.look_up(chat(opening, user(words(1000)))).done()
    again = chat(opening, user(words(1000, "xyz ")))
    assert strict.look_up(again).cached_tokens == 0
    assert loose.look_up(again).cached_tokens == 512


def test_hits_come_in_whole_blocks_of_the_configured_size() -> None:
    cache = PrefixCache(8192, block_tokens=100, min_tokens=0)
    prompt = chat(user(words(346)))  # 350 tokens
    cache.look_up(prompt).done()
    assert cache.look_up(prompt).cached_tokens == 300


def test_the_least_recently_used_prompt_is_evicted_at_the_bound() -> None:
    cache = PrefixCache(16 * 128, min_tokens=0)  # 16 blocks
    a, b, c = (chat(user(words(1020, w))) for w in ("aaa ", "bbb ", "ccc "))  # 8 blocks each
    cache.look_up(a).done()
    cache.look_up(b).done()
    cache.look_up(a).done()  # a is used again: b is now the oldest
    cache.look_up(c).done()
    assert len(cache) == 16
    assert cache.look_up(a).cached_tokens == 1024
    assert cache.look_up(b).cached_tokens == 0
    assert cache.look_up(c).cached_tokens == 1024


def test_a_prompt_longer_than_the_cache_keeps_its_prefix_not_its_tail() -> None:
    cache = PrefixCache(10 * 128, min_tokens=0)
    prompt = chat(user(words(3000)))  # 23 whole blocks
    cache.look_up(prompt).done()
    assert len(cache) == 10
    assert cache.look_up(prompt).cached_tokens == 10 * 128  # blocks 0..9, the chain's head


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 40)), max_size=60))
@settings(max_examples=100)
def test_the_cache_never_holds_more_than_its_capacity(calls: list[tuple[int, int]]) -> None:
    cache = PrefixCache(20 * 16, block_tokens=16, min_tokens=32)
    for opening, length in calls:
        prompt = chat(
            {"role": "system", "content": words(60, f"{opening:03} ")}, user(words(length))
        )
        hit = cache.look_up(prompt)
        assert hit.cached_tokens % 16 == 0
        assert hit.cached_tokens == 0 or 32 <= hit.cached_tokens <= hit.prompt_tokens
        hit.done()
        assert len(cache) <= 20
        assert cache.cached_tokens <= cache.capacity_tokens
        assert cache.look_up(prompt).cached_tokens == prompt.tokens // 16 * 16  # just stored


def test_clear_and_repr_show_the_live_state() -> None:
    cache = PrefixCache(4096)
    prompt = chat(SYSTEM)
    hit = cache.look_up(prompt)
    assert repr(hit) == "Prefill(cached=0/2004)"
    hit.done()
    assert repr(cache) == "PrefixCache(1920/4096 tokens, block=128, min=1024)"
    cache.clear()
    assert len(cache) == 0
    assert repr(prompt) == "PromptTokens(tokens=2004)"


# -- config -------------------------------------------------------------------------------


def test_the_cache_is_off_and_prefill_free_by_default() -> None:
    config = SimConfig()
    assert config.prefix_cache_tokens is None
    assert config.prefill_per_token_s == 0.0
    assert (config.prefix_min_tokens, config.prefix_block_tokens) == (1024, 128)
    assert "PrefixCache" not in repr(SimApp(config))
    assert "PrefixCache(0/4096" in repr(SimApp(SimConfig(prefix_cache_tokens=4096)))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prefix_cache_tokens": 0}, "prefix_cache_tokens"),
        ({"prefix_cache_tokens": 100}, "prefix_cache_tokens"),  # less than one block
        ({"prefix_cache_tokens": 4096.0}, "prefix_cache_tokens"),
        ({"prefill_per_token_s": -0.001}, "prefill_per_token_s"),
        ({"prefill_per_token_s": float("inf")}, "prefill_per_token_s"),
        ({"prefix_min_tokens": -1}, "prefix_min_tokens"),
        ({"prefix_block_tokens": 0}, "prefix_block_tokens"),
        ({"prefix_block_tokens": True}, "prefix_block_tokens"),
    ],
)
def test_bad_prefix_settings_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"`{field}`") as raised:
        SimConfig(**fields)
    assert raised.value.field == field


def test_a_cache_smaller_than_a_block_says_so() -> None:
    with pytest.raises(ConfigError, match=r"at least prefix_block_tokens \(64\)"):
        SimConfig(prefix_cache_tokens=63, prefix_block_tokens=64)
    assert SimConfig(prefix_cache_tokens=64, prefix_block_tokens=64, prefix_min_tokens=0)


# -- through the app ----------------------------------------------------------------------


class Watched:
    """An ASGI app timed on the fake clock: per request, from its arrival to its body's first
    bytes (a whole answer's end; a stream's first token, though httpx's ASGITransport hands
    the client a body only once whole). The client's own time is left out.
    """

    def __init__(self, app: SimApp, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = self.clock.now()
        answered = False

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal answered
            if not answered and message["type"] == "http.response.body" and message.get("body"):
                answered = True
                self.waits.append(self.clock.now() - arrived)
            await send(message)

        await self.app(scope, receive, watch)


@dataclass
class Deployment:
    """One sim (one deployment), its timings, and the real openai client in front of it."""

    app: SimApp
    sim: Watched
    client: openai.AsyncOpenAI


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@asynccontextmanager
async def deploy(clock: FakeClock, config: SimConfig = CACHING) -> AsyncIterator[Deployment]:
    app = SimApp(config, clock=clock)
    sim = Watched(app, clock)
    transport = httpx2.ASGITransport(app=sim)
    http = httpx2.AsyncClient(transport=transport, base_url="http://sim/v1")
    async with openai.AsyncOpenAI(base_url="http://sim/v1", api_key="k", http_client=http) as sdk:
        yield Deployment(app, sim, sdk)


async def run(clock: FakeClock, call: Awaitable[T]) -> T:
    """Run ``call`` to its end, the fake clock stepping meanwhile."""
    task = asyncio.ensure_future(call)
    while not task.done():
        await clock.run_for(0.01)
    return task.result()


async def ask(clock: FakeClock, deployment: Deployment) -> ChatCompletion:
    """The long conversation, asked once."""
    create = deployment.client.chat.completions.create
    return await run(clock, create(model=MODEL, messages=CONVERSATION))


def cached(usage: CompletionUsage | None) -> int | None:
    """The cached tokens a chat usage reports, as the SDK parsed them (None: not reported)."""
    assert usage is not None
    details = usage.prompt_tokens_details
    return None if details is None else details.cached_tokens


def ttft(uncached_tokens: int) -> float:
    return 0.1 + 0.001 * uncached_tokens  # CACHING's ttft_s and prefill_per_token_s


async def test_a_repeated_long_prompt_reports_cached_tokens_and_answers_sooner(
    clock: FakeClock,
) -> None:
    async with deploy(clock) as one:
        first = await ask(clock, one)
        second = await ask(clock, one)
    assert (cached(first.usage), cached(second.usage)) == (0, CACHED)
    assert second.usage is not None
    assert second.usage.prompt_tokens == PROMPT_TOKENS
    cold, warm = one.sim.waits
    assert cold == pytest.approx(ttft(PROMPT_TOKENS), abs=0.03)
    assert warm == pytest.approx(ttft(PROMPT_TOKENS - CACHED), abs=0.03)
    assert second.choices[0].message.content == first.choices[0].message.content
    stats = one.app.stats()
    assert (stats["prompt_tokens"], stats["cached_prompt_tokens"]) == (2 * PROMPT_TOKENS, CACHED)


async def test_a_stream_reports_cached_tokens_and_its_first_token_comes_sooner(
    clock: FakeClock,
) -> None:
    async def usage(deployment: Deployment) -> list[CompletionUsage]:
        stream = await deployment.client.chat.completions.create(
            model=MODEL, messages=CONVERSATION, stream=True, stream_options={"include_usage": True}
        )
        return [chunk.usage async for chunk in stream if chunk.usage is not None]

    async with deploy(clock, replace(CACHING, per_token_s=0.05)) as one:
        (cold,) = await run(clock, usage(one))
        (warm,) = await run(clock, usage(one))
    assert (cached(cold), cached(warm)) == (0, CACHED)
    first_token, again = one.sim.waits
    assert first_token == pytest.approx(ttft(PROMPT_TOKENS), abs=0.03)
    assert again == pytest.approx(ttft(PROMPT_TOKENS - CACHED), abs=0.03)


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_report_cached_input_tokens_and_answer_sooner(
    clock: FakeClock, stream: bool
) -> None:
    async def usage(deployment: Deployment) -> ResponseUsage | None:
        create = deployment.client.responses.create
        if not stream:
            return (await create(model=MODEL, instructions=LONG, input="Hi there?")).usage
        events = await create(model=MODEL, instructions=LONG, input="Hi there?", stream=True)
        done = [e.response for e in [e async for e in events] if e.type == "response.completed"]
        return done[0].usage

    async with deploy(clock, replace(CACHING, per_token_s=0.05)) as one:
        first = await run(clock, usage(one))
        second = await run(clock, usage(one))
    assert first is not None
    assert second is not None
    assert first.input_tokens == 2000 + 4 + 3  # the instructions, then one user item
    assert first.input_tokens_details.cached_tokens == 0
    assert second.input_tokens_details.cached_tokens == CACHED
    if stream:  # the whole answer takes its decode too; the first token only the prefill
        cold, warm = one.sim.waits
        assert cold == pytest.approx(ttft(2007), abs=0.03)
        assert warm == pytest.approx(ttft(2007 - CACHED), abs=0.03)


async def test_each_deployment_has_a_cache_of_its_own(clock: FakeClock) -> None:
    async with deploy(clock) as here, deploy(clock) as there:
        await ask(clock, here)
        elsewhere = await ask(clock, there)
        back = await ask(clock, here)
    assert (cached(elsewhere.usage), cached(back.usage)) == (0, CACHED)


async def test_reset_forgets_the_cached_prefixes(clock: FakeClock) -> None:
    async with deploy(clock) as one:
        await ask(clock, one)
        one.app.reset()
        again = await ask(clock, one)
    assert cached(again.usage) == 0
    assert one.app.stats()["cached_prompt_tokens"] == 0


async def test_without_the_cache_usage_is_unchanged_and_prefill_reads_every_token(
    clock: FakeClock,
) -> None:
    async with deploy(clock, replace(CACHING, prefix_cache_tokens=None)) as one:
        first = await ask(clock, one)
        second = await ask(clock, one)
        raw_create = one.client.chat.completions.with_raw_response.create
        raw = await run(clock, raw_create(model=MODEL, messages=CONVERSATION))
    assert (cached(first.usage), cached(second.usage)) == (None, None)
    assert "prompt_tokens_details" not in raw.http_response.json()["usage"]
    cold, warm, _ = one.sim.waits
    assert cold == pytest.approx(ttft(PROMPT_TOKENS), abs=0.03)
    assert warm == pytest.approx(cold, abs=0.02)
    assert one.app.stats()["cached_prompt_tokens"] == 0


async def test_a_messages_cache_read_skips_its_prefill_too(clock: FakeClock) -> None:
    sim = Watched(SimApp(replace(CACHING, prefix_cache_tokens=None), clock=clock), clock)
    marked = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    body = {"model": "claude", "max_tokens": 16, "system": marked, "messages": [user("hi")]}
    transport = httpx.ASGITransport(app=sim)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        first = await run(clock, client.post("/v1/messages", json=body))
        second = await run(clock, client.post("/v1/messages", json=body))
    assert first.json()["usage"]["cache_creation_input_tokens"] == 2000
    assert second.json()["usage"]["cache_read_input_tokens"] == 2000
    cold, warm = sim.waits
    assert cold == pytest.approx(ttft(2005), abs=0.03)  # the system block, then "hi"
    assert warm == pytest.approx(ttft(5), abs=0.03)
    assert sim.app.stats()["cached_prompt_tokens"] == 2000


def asking(n: int) -> list[Any]:
    """The long system prompt, then question ``n``."""
    return [SYSTEM, user(f"q{n}")]


async def test_a_shared_prefill_makes_a_prompt_wait_for_those_ahead(clock: FakeClock) -> None:
    shared = dataclasses.replace(CACHING, prefix_cache_tokens=None, prefill_shared=True)
    async with deploy(clock, shared) as one:
        create = one.client.chat.completions.create
        asks = [create(model=MODEL, messages=asking(n)) for n in range(3)]
        await run(clock, asyncio.gather(*asks))
    reading = 0.001 * (4 + 2000 + 4 + 1)  # one prompt's tokens, none cached
    waits = sorted(one.sim.waits)
    for ahead, wait in enumerate(waits):  # each reads after the prompts that came first
        assert wait == pytest.approx(0.1 + reading * (ahead + 1), abs=0.03)


async def test_without_a_shared_prefill_prompts_are_read_side_by_side(clock: FakeClock) -> None:
    alone = dataclasses.replace(CACHING, prefix_cache_tokens=None)
    async with deploy(clock, alone) as one:
        create = one.client.chat.completions.create
        asks = [create(model=MODEL, messages=asking(n)) for n in range(3)]
        await run(clock, asyncio.gather(*asks))
    assert max(one.sim.waits) - min(one.sim.waits) < 0.03


def test_sim_command_passes_the_prefix_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[SimConfig] = []
    monkeypatch.setattr("overdrive.sim.run_sim", lambda config, host, port: seen.append(config))
    argv = ["sim", "--prefix-cache-tokens", "65536", "--prefill-per-token", "0.0002"]
    assert cli.main([*argv, "--prefill-shared", "--port", "0"]) == 0
    assert (seen[0].prefix_cache_tokens, seen[0].prefill_per_token_s) == (65536, 0.0002)
    assert seen[0].prefill_shared
    assert cli.main(["sim", "--port", "0"]) == 0
    assert (seen[1].prefix_cache_tokens, seen[1].prefill_per_token_s) == (None, 0.0)
    assert not seen[1].prefill_shared
