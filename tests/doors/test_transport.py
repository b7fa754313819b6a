from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from overdrive import Overdrive
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, FakeUpstream, engine, finish, io_turns, refusing_url

HELLO: Any = [{"role": "user", "content": "hello"}]


def openai_client(od: Overdrive) -> openai.AsyncOpenAI:
    # The host is deliberately not the upstream's: routing goes by model.
    return openai.AsyncOpenAI(
        base_url="http://anywhere.invalid/v1",
        api_key="unused",
        max_retries=0,
        http_client=od.http_client(),
    )


async def test_openai_client_chat_embeddings_and_models(clock: FakeClock) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od:
        client = openai_client(od)
        chat = await client.chat.completions.create(model="m", messages=HELLO)
        vectors = await client.embeddings.create(model="e", input=["x", "y"])
        models = await client.models.list()
    assert chat.choices[0].message.content == "hello"
    assert len(vectors.data) == 2
    assert [m.id for m in models.data] == ["m", "e"]
    assert [path for _, path, _ in fake.calls] == ["/v1/chat/completions", "/v1/embeddings"]


async def test_cache_header_and_identical_bytes(clock: FakeClock) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od, od.http_client() as http:
        body = {"model": "m", "messages": HELLO}
        first = await http.post("http://x/v1/chat/completions", json=body)
        second = await http.post("http://x/v1/chat/completions", json=body)
    assert first.headers["x-overdrive-cache"] == "MISS"
    assert second.headers["x-overdrive-cache"] == "HIT"
    assert second.headers["x-overdrive-upstream"] == "a"
    assert first.content == second.content
    assert len(fake.calls) == 1


class GatedStream(httpx.AsyncByteStream):
    """Sends one SSE event, then holds the rest until the test opens the gate."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _event("first")
        await self.gate.wait()
        yield _event("second")
        yield b"data: [DONE]\n\n"


def _event(word: str) -> bytes:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def test_streamed_chunks_arrive_before_the_upstream_finishes(clock: FakeClock) -> None:
    gate = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=GatedStream(gate)
        )

    async with FakeServer(handler) as upstream, engine(upstream, clock) as od:
        stream = await openai_client(od).chat.completions.create(
            model="m", messages=HELLO, stream=True
        )
        chunks = aiter(stream)
        first = await anext(chunks)
        # The upstream has not produced its second chunk yet: the first got through alone.
        assert first.choices[0].delta.content == "first"
        assert not gate.is_set()
        gate.set()
        rest = [c.choices[0].delta.content async for c in chunks]
    assert rest == ["second"]
    assert od.stats()["in_flight"] == {"a": 0}


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b"{not json", 400, "<body>"),
        (b"[1, 2]", 400, "<body>"),
        (b'{"model": "m"}', 400, "messages"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
async def test_bad_requests_get_openai_style_errors(
    clock: FakeClock, content: bytes, status: int, param: str
) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od, od.http_client() as http:
        response = await http.post("http://x/v1/chat/completions", content=content)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert fake.calls == []


async def test_unreachable_upstream_maps_to_502(clock: FakeClock) -> None:
    with refusing_url() as url:
        od = Overdrive.from_config(
            {
                "upstreams": [{"name": "a", "base_url": url, "models": ["m"]}],
                "retry": {"attempts": 0},
            },
            clock=clock,
        )
        async with od:
            with pytest.raises(openai.APIStatusError) as info:
                await openai_client(od).chat.completions.create(model="m", messages=HELLO)
    assert info.value.status_code == 502
    assert "upstream 'a'" in str(info.value)


Step = tuple[float, dict[str, str]]  # seconds to let pass first, then the request's headers


async def cache_states(clock: FakeClock, steps: list[Step], **cache: Any) -> tuple[list[str], int]:
    """``x-overdrive-cache`` of identical calls made as ``steps`` say, and upstream calls made."""
    async with FakeUpstream(clock) as fake:
        config = {
            "upstreams": [{"name": "a", "base_url": fake.url, "models": ["m"]}],
            "cache": cache,
        }
        async with Overdrive.from_config(config, clock=clock) as od:
            client = od.http_client(base_url="http://any.test/v1")
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            states = []
            for seconds, extra in steps:
                clock.advance(seconds)
                response = await client.post("/chat/completions", json=body, headers=extra)
                assert response.status_code == 200
                states.append(response.headers["x-overdrive-cache"])
                await io_turns()  # let a background refresh run its course
    return states, len(fake.calls)


def at_once(*headers: dict[str, str]) -> list[Step]:
    return [(0.0, h) for h in headers]


async def test_no_cache_skips_the_cached_answer_but_stores_the_new_one(clock: FakeClock) -> None:
    states, calls = await cache_states(clock, at_once({}, {"cache-control": "no-cache"}, {}))
    assert states == ["MISS", "MISS", "HIT"]
    assert calls == 2


async def test_no_store_neither_reads_nor_stores(clock: FakeClock) -> None:
    plain: dict[str, str] = {}
    no_store = {"cache-control": "no-store, max-age=0"}
    states, calls = await cache_states(clock, at_once(no_store, plain, plain))
    assert states == ["MISS", "MISS", "HIT"]  # the no-store answer was never kept
    assert calls == 2


async def test_max_age_refuses_answers_older_than_it(clock: FakeClock) -> None:
    young, old = {"cache-control": "max-age=60"}, {"cache-control": "max-age=10"}
    steps = [(0.0, {}), (30.0, young), (0.0, old), (0.0, old)]
    states, calls = await cache_states(clock, steps)
    # 30 s old: fine for max-age=60, too old for max-age=10, whose refetch is then young.
    assert states == ["MISS", "HIT", "MISS", "HIT"]
    assert calls == 2


async def test_a_malformed_max_age_is_a_400_naming_the_header(clock: FakeClock) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od:
        client = od.http_client(base_url="http://any.test/v1")
        body = {"model": "m", "messages": HELLO}
        response = await client.post(
            "/chat/completions", json=body, headers={"cache-control": "max-age=soon"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "cache-control"
    assert not fake.calls


async def test_an_answer_past_its_ttl_is_served_stale_while_it_is_refreshed(
    clock: FakeClock,
) -> None:
    steps: list[Step] = [(0.0, {}), (90.0, {}), (0.0, {})]
    states, calls = await cache_states(clock, steps, ttl="60s", stale="5m")
    assert states == ["MISS", "STALE", "HIT"]  # the refresh replaced the stale entry
    assert calls == 2


async def test_queue_ms_tells_how_long_the_call_waited_for_its_rate_limit(
    clock: FakeClock,
) -> None:
    async with FakeUpstream(clock) as fake:
        upstream = {"name": "a", "base_url": fake.url, "models": ["m"], "rpm": 60, "burst": "1s"}
        config = {"upstreams": [upstream], "cache": {"enabled": False}}
        async with Overdrive.from_config(config, clock=clock) as od:
            client = od.http_client(base_url="http://any.test/v1")
            body = {"model": "m", "messages": HELLO}
            first = await client.post("/chat/completions", json=body)
            second = await finish(clock, client.post("/chat/completions", json=body))
    assert float(first.headers["x-overdrive-queue-ms"]) == 0.0
    # One request a second: the second waited about a second for its turn.
    assert 900.0 <= float(second.headers["x-overdrive-queue-ms"]) <= 1100.0
