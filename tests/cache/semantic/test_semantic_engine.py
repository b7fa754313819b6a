"""The semantic tier in the engine, with the real local model and the simulated upstream.

A paraphrase is answered from the cache (marked SEMANTIC, with its
similarity) and the upstream is not asked again; a near-miss, another scope,
``no-cache`` and another tenant go upstream. Streams replay as streams; the
Responses and Messages APIs are matched too; the upstream embedder goes
through the engine's own embeddings calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from rich.console import Console

from overdrive import ConfigError, Overdrive
from overdrive._calls import chat_call
from overdrive.apis import MESSAGES, RESPONSES
from overdrive.coalesce import StreamReply
from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.optimize import render
from overdrive.sim import SimConfig, SimServer

CHAT, EMBED, CLAUDE = "gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5"
SYSTEM = {"role": "system", "content": "You answer travel questions in one sentence."}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(seed=3, ttft_s=0.0, per_token_s=0.0, jitter=0.0, models=(CHAT, EMBED))
    with SimServer(config) as server:
        yield server


def engine(sim: SimServer, **semantic: Any) -> Overdrive:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT, EMBED]}
    cache = {"disk": None, "semantic": {"enabled": True, **semantic}}
    return Overdrive.from_config({"upstreams": [upstream], "cache": cache})


def chats(sim: SimServer) -> int:
    return int(sim.stats()["requests"].get("/v1/chat/completions", 0))


def ask(text: str, *, system: dict[str, str] = SYSTEM, **extra: Any) -> Any:
    body = {"model": CHAT, "messages": [system, {"role": "user", "content": text}], **extra}
    return chat_call(body)


async def settled(od: Overdrive) -> None:
    """Wait for the background remembering of answers (the test reads right after)."""
    assert od.semantic is not None
    await od.semantic.settle()


async def test_a_paraphrase_is_answered_from_the_cache(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        first = await od.request(ask("How do I reset my password?"))
        await settled(od)
        again = await od.request(ask("How can I reset my password?"))
        assert again.source == "semantic"
        assert again.body == first.body
        assert again.similarity is not None
        assert 0.8 < again.similarity < 1.0
        assert chats(sim) == 1
        stats = od.stats()["semantic"]
        assert stats["hits"] == 1
        assert stats["entries"] == 1


async def test_a_near_miss_goes_upstream(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        await od.request(ask("Turn on dark mode in the settings"))
        await settled(od)
        reversed_ = await od.request(ask("Turn off dark mode in the settings"))
        assert reversed_.source == "upstream"
        assert chats(sim) == 2
        assert od.stats()["semantic"]["refused"]


async def test_another_system_prompt_is_another_scope(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        await od.request(ask("How do I reset my password?"))
        await settled(od)
        other = {"role": "system", "content": "You answer in French."}
        result = await od.request(ask("How can I reset my password?", system=other))
        assert result.source == "upstream"
        assert chats(sim) == 2


async def test_no_cache_skips_the_tier(sim: SimServer) -> None:
    import dataclasses

    sim.reset()
    async with engine(sim) as od:
        await od.request(ask("How do I reset my password?"))
        await settled(od)
        fresh = dataclasses.replace(ask("How can I reset my password?"), cache="no-cache")
        assert (await od.request(fresh)).source == "upstream"
        assert chats(sim) == 2


async def test_tenants_do_not_share_semantic_hits(sim: SimServer) -> None:
    import dataclasses

    sim.reset()
    async with engine(sim) as od:
        mine = dataclasses.replace(ask("How do I reset my password?"), namespace="a")
        await od.request(mine)
        await settled(od)
        theirs = dataclasses.replace(ask("How can I reset my password?"), namespace="b")
        assert (await od.request(theirs)).source == "upstream"
        same = dataclasses.replace(ask("How can I reset my password?"), namespace="a")
        assert (await od.request(same)).source == "semantic"


async def test_a_stream_is_replayed_as_a_stream(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        first: StreamReply = await od.open_stream(ask("What time zone is Tokyo in?", stream=True))
        body = await first.aread()
        await settled(od)
        again = await od.open_stream(ask("Which time zone is Tokyo in?", stream=True))
        assert (again.source, await again.aread()) == ("semantic", body)
        assert again.similarity is not None
        plain = await od.request(ask("Which time zone is Tokyo in?"))
        assert plain.source == "upstream"  # a whole answer is not a stream's entry


async def test_the_sdk_sees_the_semantic_marks(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        client = openai.AsyncOpenAI(api_key="unused", http_client=od.http_client())
        messages: Any = [
            SYSTEM,
            {
                "role": "user",
                "content": "Can you recommend a good hotel near the station?",
            },
        ]
        await client.chat.completions.create(model=CHAT, messages=messages)
        await settled(od)
        messages[-1] = {
            "role": "user",
            "content": "Could you recommend a good hotel near the station?",
        }
        raw = await client.chat.completions.with_raw_response.create(model=CHAT, messages=messages)
        assert raw.headers["x-overdrive-cache"] == "SEMANTIC"
        assert 0.8 < float(raw.headers["x-overdrive-similarity"]) <= 1.0
        assert raw.parse().choices[0].message.content
        await client.close()


async def test_the_responses_api_is_matched_on_its_input(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        base = {"model": CHAT, "instructions": "Answer briefly."}
        await od.request(RESPONSES.call({**base, "input": "How do I reset my password?"}))
        await settled(od)
        again = await od.request(RESPONSES.call({**base, "input": "How can I reset my password?"}))
        assert again.source == "semantic"


async def test_the_messages_api_is_matched_on_its_last_user_turn() -> None:
    config = SimConfig(seed=4, ttft_s=0.0, per_token_s=0.0, jitter=0.0, models=(CLAUDE,))
    with SimServer(config) as sim:
        upstream = {"name": "claude", "base_url": sim.base_url, "models": [CLAUDE]}
        cache = {"disk": None, "semantic": {"enabled": True}}
        async with Overdrive.from_config(
            {"upstreams": [{**upstream, "api": "anthropic"}], "cache": cache}
        ) as od:

            def turn(text: str) -> Any:
                message = {"role": "user", "content": [{"type": "text", "text": text}]}
                return MESSAGES.call({"model": CLAUDE, "max_tokens": 64, "messages": [message]})

            await od.request(turn("How do I reset my password?"))
            await settled(od)
            assert (await od.request(turn("How can I reset my password?"))).source == "semantic"


async def test_the_upstream_embedder_embeds_through_the_engine(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim, embedder="upstream", model=EMBED) as od:
        await od.request(ask("How do I reset my password?"))
        await settled(od)
        parts = [{"type": "text", "text": "How do I reset my password?"}]
        same_text = chat_call(
            {"model": CHAT, "messages": [SYSTEM, {"role": "user", "content": parts}]}
        )
        result = await od.request(same_text)  # another exact key, the same question
        assert result.source == "semantic"
        assert result.similarity == pytest.approx(1.0, abs=1e-5)
        assert sim.stats()["requests"].get("/v1/embeddings", 0) >= 1
        assert chats(sim) == 1


def test_an_upstream_embedder_must_be_served(sim: SimServer) -> None:
    with pytest.raises(ConfigError, match=r"cache\.semantic.model"):
        engine(sim, embedder="upstream", model="no-such-embedder")


def test_a_local_model_that_is_not_there_names_the_field(sim: SimServer, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"cache\.semantic.model.*nothing is downloaded"):
        engine(sim, model=str(tmp_path / "missing"))


def test_an_unknown_check_names_the_field(sim: SimServer) -> None:
    with pytest.raises(ConfigError, match=r"cache.semantic.checks.*unknown check 'vibes'"):
        engine(sim, checks=["vibes"])


def test_the_tier_must_fit_in_the_cache_memory(sim: SimServer) -> None:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    cache = {"memory": "16MB", "semantic": {"enabled": True, "memory": "32MB"}}
    with pytest.raises(ConfigError, match=r"cache\.semantic.memory"):
        Overdrive.from_config({"upstreams": [upstream], "cache": cache})


def test_the_gateway_marks_a_semantic_hit_and_honours_no_cache(sim: SimServer) -> None:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    config = {"upstreams": [upstream], "cache": {"disk": None, "semantic": {"enabled": True}}}
    app = GatewayApp(config)
    with GatewayServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:

        def ask_gateway(text: str, **headers: str) -> httpx.Response:
            body = {"model": CHAT, "messages": [SYSTEM, {"role": "user", "content": text}]}
            return http.post("/v1/chat/completions", json=body, headers=headers)

        first = ask_gateway("Where can I buy a metro ticket?")
        engine = app.engine
        assert engine is not None
        assert engine.semantic is not None
        engine.submit(engine.semantic.settle()).result(timeout=30)
        hit = ask_gateway("Where can I buy a ticket for the metro?")
        # The question that just hit, again: only no-cache keeps it from hitting.
        skipped = ask_gateway(
            "Where can I buy a ticket for the metro?", **{"cache-control": "no-cache"}
        )
    assert first.headers["x-overdrive-cache"] == "MISS"
    assert skipped.headers["x-overdrive-cache"] == "MISS"
    assert hit.headers["x-overdrive-cache"] == "SEMANTIC"
    assert float(hit.headers["x-overdrive-similarity"]) > 0.8
    assert hit.json()["choices"] == first.json()["choices"]


def test_the_readme_config_block_loads_as_written() -> None:
    import tomllib
    from pathlib import Path

    from overdrive._units import parse_bytes
    from overdrive.config import load_config

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("```toml\n[cache.semantic]\n", 1)[1].split("```", 1)[0]
    settings = tomllib.loads(block)
    assert settings == {"enabled": True}
    commented: dict[str, Any] = {}
    for line in block.splitlines():
        if line.startswith("# ") and " = " in line and ";" not in line:
            commented |= tomllib.loads(line[2:].split("   #")[0].split("  #")[0])
    upstream = {"name": "u", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}
    semantic = {**settings, **commented}
    config = load_config({"upstreams": [upstream], "cache": {"semantic": semantic}})
    assert config.cache.semantic.checks == ["negation", "numbers"]
    assert config.cache.semantic.memory == parse_bytes("32MB")


def test_the_tier_memory_is_carved_out_of_the_cache_memory(sim: SimServer) -> None:
    from overdrive._units import parse_bytes

    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT]}
    cache = {"memory": "64MB", "semantic": {"enabled": True, "memory": "16MB"}}
    od = Overdrive.from_config({"upstreams": [upstream], "cache": cache})
    assert od.stats()["cache"]["max_bytes"] == parse_bytes("48MB")
    assert od.semantic is not None
    assert od.semantic.memory == parse_bytes("16MB")
    od.close()


async def test_the_analysis_tells_the_semantic_share_of_the_cache(sim: SimServer) -> None:
    sim.reset()
    async with engine(sim) as od:
        await od.request(ask("How do I reset my password?"))
        await od.request(ask("How do I reset my password?"))  # an exact hit
        assert od.semantic is not None
        await od.semantic.settle()
        await od.request(ask("How can I reset my password?"))  # a semantic hit
        await od.request(ask("Which museums open late on Fridays?"))  # a semantic miss
        served = od.analyse().served_locally
        assert served["cache"] == pytest.approx(2 / 4)
        assert served["semantic"] == pytest.approx(1 / 4)
        console = Console(width=120, record=True)
        console.print(render(od.analyse()))
        assert "cache 50% (semantic 25%)" in console.export_text()
