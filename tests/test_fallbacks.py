"""Model fallbacks: once a model's attempts are spent, a call goes on to the next, in order.

Fake upstreams on loopback (one per model, so each model's failures are
scripted apart) on a fake clock for the engine's own logic; the real sim and
the real openai SDK for the ``x-overdrive-model`` header through the door.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from overdrive import Overdrive, UpstreamStatusError
from overdrive._calls import chat_call
from overdrive.monitor.names import FALLBACKS, METRIC_HELP
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream, finish, refusing_url, status
from tests.stream_upstream import DONE, StreamUpstream, chat_chunk

HELLO: Any = [{"role": "user", "content": "hello"}]
FAST = {"name": "fast", "targets": ["mini"], "fallbacks": ["big", "huge"]}


def engine(clock: FakeClock, urls: dict[str, str], **retry: Any) -> Overdrive:
    """One upstream per model (named after it), the alias FAST, one retry per model."""
    upstreams = [{"name": model, "base_url": url, "models": [model]} for model, url in urls.items()]
    settings = {"attempts": 1, "base": "100ms", "cap": "1s", **retry}
    config = {"upstreams": upstreams, "models": [FAST], "retry": settings}
    return Overdrive.from_config(config, clock=clock)


@pytest.fixture
async def fakes(clock: FakeClock) -> AsyncIterator[dict[str, FakeUpstream]]:
    async with FakeUpstream(clock) as mini, FakeUpstream(clock) as big, FakeUpstream(clock) as huge:
        yield {"mini": mini, "big": big, "huge": huge}


def urls(fakes: dict[str, FakeUpstream]) -> dict[str, str]:
    return {model: fake.url for model, fake in fakes.items()}


def fallbacks(od: Overdrive, source: str, target: str) -> float:
    return od.metrics.value(FALLBACKS, op="chat", from_model=source, to_model=target)


def models_sent(fakes: dict[str, FakeUpstream]) -> list[str]:
    """Every request's model, in the order they arrived (fake time, then model order)."""
    sent = [(at, body["model"]) for fake in fakes.values() for at, _, body in fake.calls]
    return [model for _, model in sorted(sent, key=lambda s: s[0])]


async def test_a_failing_model_falls_back_in_order_and_the_result_names_who_served(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(503)] * 2
    fakes["big"].script = [status(500)] * 2
    async with engine(clock, urls(fakes)) as od:
        result = await finish(clock, od.request(chat_call({"model": "fast", "messages": HELLO})))
    assert (result.status, result.model, result.upstream) == (200, "huge", "huge")
    # Each model's attempts are spent (the first try and its one retry) before the next.
    assert models_sent(fakes) == ["mini", "mini", "big", "big", "huge"]
    assert fallbacks(od, "mini", "big") == fallbacks(od, "big", "huge") == 1


async def test_a_fallbacks_answer_is_served_but_not_cached_under_the_models_key(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(503)] * 2
    async with engine(clock, urls(fakes)) as od:
        call = chat_call({"model": "fast", "messages": HELLO})
        degraded = await finish(clock, od.request(call))
        recovered = await finish(clock, od.request(call))
        cached = await finish(clock, od.request(call))
    assert (degraded.model, recovered.model, cached.model) == ("big", "mini", "mini")
    assert (recovered.source, cached.source) == ("upstream", "cache")
    assert len(fakes["big"].calls) == 1


@pytest.mark.parametrize("code", [400, 401, 404, 422])
async def test_a_callers_error_never_falls_back(
    clock: FakeClock, fakes: dict[str, FakeUpstream], code: int
) -> None:
    fakes["mini"].script = [status(code)]
    async with engine(clock, urls(fakes)) as od:
        with pytest.raises(UpstreamStatusError, match=f"HTTP {code}"):
            await finish(clock, od.chat(model="fast", messages=HELLO))
    assert models_sent(fakes) == ["mini"]
    assert fallbacks(od, "mini", "big") == 0


async def test_a_429_not_waited_out_and_a_408_fall_back(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(429, {"retry-after": "1"})]
    fakes["big"].script = [status(408)] * 2  # a 408 is retried first, like a 5xx
    async with engine(clock, urls(fakes), rate_limited_attempts=0) as od:
        result = await finish(clock, od.request(chat_call({"model": "fast", "messages": HELLO})))
    assert result.model == "huge"
    assert models_sent(fakes) == ["mini", "big", "big", "huge"]


async def test_an_unreachable_model_falls_back(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    with refusing_url() as nowhere:
        async with engine(clock, {**urls(fakes), "mini": nowhere}) as od:
            answer = await finish(clock, od.chat(model="fast", messages=HELLO))
    assert answer["model"] == "big"  # the upstream's own body, untouched
    assert fallbacks(od, "mini", "big") == 1


async def test_when_every_model_fails_the_last_ones_error_is_the_callers(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    for fake in fakes.values():
        fake.script = [status(503)] * 2
    async with engine(clock, urls(fakes)) as od:
        with pytest.raises(UpstreamStatusError) as info:
            await finish(clock, od.chat(model="fast", messages=HELLO))
    assert (info.value.upstream, info.value.status) == ("huge", 503)
    assert len(models_sent(fakes)) == 6


async def test_a_model_without_an_alias_never_falls_back(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(503)] * 2
    async with engine(clock, urls(fakes)) as od:
        with pytest.raises(UpstreamStatusError):
            await finish(clock, od.chat(model="mini", messages=HELLO))
    assert models_sent(fakes) == ["mini", "mini"]


async def test_a_batched_embedding_falls_back_alone_when_its_batch_failed(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(503)] * 2
    upstreams = [{"name": m, "base_url": f.url, "models": [m]} for m, f in fakes.items()]
    vec = {"name": "vec", "targets": ["mini"], "fallbacks": ["big"]}
    settings = {"attempts": 1, "base": "100ms", "cap": "1s"}
    config = {"upstreams": upstreams, "models": [vec], "retry": settings}
    async with Overdrive.from_config(config, clock=clock) as od:
        vectors = await finish(clock, od.embed("one text", model="vec"))
    assert vectors["model"] == "big"
    assert len(vectors["data"]) == 1
    assert [body["input"] for _, _, body in fakes["big"].calls] == ["one text"]
    assert od.metrics.value(FALLBACKS, op="embeddings", from_model="mini", to_model="big") == 1


def test_the_fallback_metric_is_in_the_catalogue_with_help() -> None:
    assert FALLBACKS == "overdrive_fallbacks_total"
    assert "next model" in METRIC_HELP[FALLBACKS]


# -- streams ---------------------------------------------------------------------


async def big_stream(index: int, request: dict[str, Any]) -> AsyncIterator[bytes]:
    yield chat_chunk("from big", model=request["model"])
    yield DONE


async def test_a_stream_falls_back_before_its_first_byte(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(503)] * 4  # both streams' attempts
    big = StreamUpstream(big_stream)
    async with big, engine(clock, {**urls(fakes), "big": big.base_url}) as od:
        call = chat_call({"model": "fast", "messages": HELLO, "stream": True})
        first = await finish(clock, od.open_stream(call))
        body = await first.aread()
        again = await finish(clock, od.open_stream(call))
        await again.aread()
    assert (first.status, first.model, first.upstream) == (200, "big", "big")
    assert b"from big" in body
    assert body.endswith(DONE)
    assert [r["model"] for r in big.requests] == ["big", "big"]  # a fallback's stream: not kept
    assert (again.model, again.source) == ("big", "upstream")
    assert fallbacks(od, "mini", "big") == 2


async def test_a_stream_of_its_own_model_is_kept_and_replayed_with_its_model(
    clock: FakeClock,
) -> None:
    async with StreamUpstream(big_stream) as mini:
        chain = dict.fromkeys(["mini", "big", "huge"], mini.base_url)
        async with engine(clock, chain) as od:
            call = chat_call({"model": "fast", "messages": HELLO, "stream": True})
            await (await finish(clock, od.open_stream(call))).aread()
            await od._cache.flush()
            replayed = await finish(clock, od.open_stream(call))
            await replayed.aread()
    assert (replayed.source, replayed.model) == ("cache", "mini")
    assert len(mini.requests) == 1


async def test_a_stream_refused_as_the_callers_error_does_not_fall_back(
    clock: FakeClock, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["mini"].script = [status(400)]
    async with engine(clock, urls(fakes)) as od:
        call = chat_call({"model": "fast", "messages": HELLO, "stream": True})
        reply = await finish(clock, od.open_stream(call))
        await reply.aread()
    assert (reply.status, reply.model) == (400, "mini")
    assert models_sent(fakes) == ["mini"]


# -- the door, with the real SDK and the real sim ---------------------------------------


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[SimServer, SimServer]]:
    config = SimConfig(seed=5, ttft_s=0.0, per_token_s=0.0, models=("gpt-4o-mini", "gpt-4o"))
    with SimServer(config) as broken, SimServer(config) as healthy:
        broken.set_faults(error_rate=1.0)
        yield broken, healthy


async def test_the_door_says_which_model_served_through_the_openai_sdk(
    sims: tuple[SimServer, SimServer],
) -> None:
    broken, healthy = sims
    upstreams = [
        {"name": "broken", "base_url": broken.base_url, "models": ["gpt-4o-mini"]},
        {"name": "healthy", "base_url": healthy.base_url, "models": ["gpt-4o"]},
    ]
    config = {
        "upstreams": upstreams,
        "models": [{"name": "gpt-4o-mini", "fallbacks": ["gpt-4o"]}],
        "retry": {"attempts": 1, "base": "1ms", "cap": "2ms", "budget_ratio": 1.0},
    }
    async with Overdrive.from_config(config) as od:
        client = openai.AsyncOpenAI(
            base_url="http://127.0.0.1:9/v1", api_key="unused", http_client=od.http_client()
        )
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=HELLO
        )
        streamed = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True
        )
        chunks = [chunk async for chunk in streamed.parse()]
        direct = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "direct"}]
        )
        listed = await client.models.list()
        await client.close()
    assert raw.headers["x-overdrive-model"] == "gpt-4o"
    assert raw.headers["x-overdrive-upstream"] == "healthy"
    assert raw.parse().model == "gpt-4o"  # the upstream's own body
    assert streamed.headers["x-overdrive-model"] == "gpt-4o"
    assert chunks
    assert direct.headers["x-overdrive-model"] == "gpt-4o"
    assert [m.id for m in listed.data] == ["gpt-4o-mini", "gpt-4o"]
    moved = od.metrics.value(FALLBACKS, op="chat", from_model="gpt-4o-mini", to_model="gpt-4o")
    assert moved == 2
    # Each call's attempts on the broken sim were spent (a try and a retry) first.
    assert sum(broken.stats()["requests"].values()) == 4
