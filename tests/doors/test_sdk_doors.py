"""Both flavours and both kinds of door (async, sync) under the real openai SDK and the real sim."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from overdrive import Overdrive
from overdrive.sim import SimConfig, SimServer

CHAT = "gpt-4o-mini"
EMBED = "text-embedding-3-small"
NOWHERE = "http://127.0.0.1:9/v1"  # a dead port: the door routes by model instead


def hello(word: str = "doors") -> Any:
    return [{"role": "user", "content": f"Say hello to the {word} test."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(
        seed=3, ttft_s=0.0, per_token_s=0.0005, embed_base_s=0.0, models=(CHAT, EMBED)
    )
    with SimServer(config) as server:
        yield server


def engine_on(sim: SimServer, **retry: Any) -> Overdrive:
    sim.reset()
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [CHAT, EMBED]}
    settings = {"base": "1ms", "cap": "2ms", "budget_ratio": 1.0, **retry}
    return Overdrive.from_config({"upstreams": [upstream], "retry": settings})


def requests_made(sim: SimServer) -> int:
    return sum(sim.stats()["requests"].values())


async def test_async_openai_on_the_default_httpx2_flavour(sim: SimServer) -> None:
    async with engine_on(sim) as od:
        client = openai.AsyncOpenAI(
            base_url=NOWHERE, api_key="unused", http_client=od.http_client()
        )
        first = await client.chat.completions.create(model=CHAT, messages=hello())
        again = await client.chat.completions.create(model=CHAT, messages=hello())
        vectors = await client.embeddings.create(model=EMBED, input=["a", "b"])
        stream = await client.chat.completions.create(
            model=CHAT, messages=hello("stream"), stream=True
        )
        words = [c.choices[0].delta.content async for c in stream if c.choices]
        models = await client.models.list()
        await client.close()
    assert first.choices[0].message.content == again.choices[0].message.content
    assert len(vectors.data) == 2
    assert "".join(w or "" for w in words)
    assert {m.id for m in models.data} == {CHAT, EMBED}
    assert sim.stats()["requests"] == {"/v1/chat/completions": 2, "/v1/embeddings": 1}


def test_sync_openai_from_many_threads_with_no_loop_running(sim: SimServer) -> None:
    od = engine_on(sim)
    client = openai.OpenAI(
        base_url=NOWHERE, api_key="unused", http_client=od.http_client(sync=True)
    )

    def ask(i: int) -> str:
        answer = client.chat.completions.create(model=CHAT, messages=hello(f"thread {i % 4}"))
        return answer.choices[0].message.content or ""

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(16)))
        streamed = client.chat.completions.create(model=CHAT, messages=hello("s"), stream=True)
        words = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    finally:
        client.close()
        od.close()
    assert all(answers)
    # Four distinct questions: the rest came from the cache or joined a call in flight.
    assert sim.stats()["requests"]["/v1/chat/completions"] == 4 + 1
    assert "".join(words).split() == ask_direct(sim, "s").split()
    assert od._home.owned is None  # od.close() stopped the engine's own loop thread


def ask_direct(sim: SimServer, word: str) -> str:
    with openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as direct:
        answer = direct.chat.completions.create(model=CHAT, messages=hello(word))
    return answer.choices[0].message.content or ""


async def test_sync_client_in_threads_while_the_engine_runs_on_this_loop(sim: SimServer) -> None:
    async with engine_on(sim) as od:
        await od.chat(model=CHAT, messages=hello("warm"))  # home: this test's loop
        client = openai.OpenAI(base_url=NOWHERE, api_key="u", http_client=od.http_client(sync=True))

        def ask() -> str:
            return client.chat.completions.create(model=CHAT, messages=hello("warm")).id

        ids = await asyncio.gather(*(asyncio.to_thread(ask) for _ in range(4)))
        assert od._home.owned is None  # the live loop served them: no thread of its own
        with pytest.raises(RuntimeError, match="to_thread"):
            ask()  # from inside the engine's own loop it would block it forever
        client.close()
    assert len(set(ids)) == 1  # one answer, from the cache
    assert sim.stats()["requests"]["/v1/chat/completions"] == 1


async def test_the_httpx_flavour_async_and_sync(sim: SimServer) -> None:
    async with engine_on(sim) as od:
        body = {"model": CHAT, "messages": hello("httpx")}
        async with od.http_client(flavour="httpx", base_url=NOWHERE) as http:
            assert isinstance(http, httpx.AsyncClient)
            whole = await http.post("/chat/completions", json=body)
            async with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as s:
                events = [line async for line in s.aiter_lines() if line.startswith("data: ")]

        def sync_calls() -> tuple[int, str]:
            with od.http_client(sync=True, flavour="httpx", base_url=NOWHERE) as client:
                assert isinstance(client, httpx.Client)
                again = client.post("/chat/completions", json=body)
                return again.status_code, again.headers["x-overdrive-cache"]

        status, cached = await asyncio.to_thread(sync_calls)
    assert whole.status_code == 200
    assert events[-1] == "data: [DONE]"
    assert (status, cached) == (200, "HIT")


async def test_an_sdk_call_against_a_failing_upstream_retries_only_in_the_engine(
    sim: SimServer,
) -> None:
    """x-should-retry: false — the SDK's own two retries would triple the engine's attempts."""
    sim.set_faults(error_rate=1.0)
    try:
        counts = []
        for sdk_retries in (0, 2):
            async with engine_on(sim, attempts=2) as od:
                client = openai.AsyncOpenAI(
                    base_url=NOWHERE,
                    api_key="unused",
                    max_retries=sdk_retries,
                    http_client=od.http_client(),
                )
                with pytest.raises(openai.InternalServerError):
                    await client.chat.completions.create(model=CHAT, messages=hello("fail"))
                await client.close()
            counts.append(requests_made(sim))
    finally:
        sim.set_faults(error_rate=0.0)
    engine_attempts, with_sdk_retries = counts
    assert engine_attempts == 3  # the first try and the engine's two retries
    assert with_sdk_retries == engine_attempts
