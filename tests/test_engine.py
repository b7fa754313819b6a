from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from overdrive import (
    ConfigError,
    Overdrive,
    RequestError,
    UnknownModelError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailableError,
)
from overdrive._calls import chat_call
from overdrive.cache import StoredAnswer
from overdrive.cache._codec import Codec
from overdrive.cache._disk import DiskTier
from overdrive.cache._tier import Entry
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, FakeUpstream, engine, finish, raw, refusing_url, status

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(clock) as upstream:
        yield upstream


async def test_chat_and_embed_return_openai_json(clock: FakeClock, fake: FakeUpstream) -> None:
    async with engine(fake, clock) as od:
        answer = await od.chat(model="m", messages=HELLO)
        vectors = await od.embed(["a", "b"], model="e")
    assert answer["choices"][0]["message"]["content"] == "hello"
    assert len(vectors["data"]) == 2
    assert [path for _, path, _ in fake.calls] == ["/v1/chat/completions", "/v1/embeddings"]


async def test_repeat_is_served_from_cache(clock: FakeClock, fake: FakeUpstream) -> None:
    async with engine(fake, clock) as od:
        first = await od.chat(model="m", messages=HELLO)
        second = await od.chat(model="m", messages=HELLO)
        await od.chat(model="m", messages=HELLO, temperature=0.2)
    assert first == second
    assert len(fake.calls) == 2
    assert od.metrics.value("overdrive_cache_hits_total", op="chat") == 1


async def test_cache_expires_after_ttl(clock: FakeClock, fake: FakeUpstream) -> None:
    od = engine(fake, clock)
    assert od.config.cache.ttl == 3600
    async with od:
        await od.chat(model="m", messages=HELLO)
        clock.advance(3601)
        await od.chat(model="m", messages=HELLO)
    assert len(fake.calls) == 2


async def test_twenty_identical_concurrent_calls_reach_upstream_once(clock: FakeClock) -> None:
    fake = FakeUpstream(clock, gate=asyncio.Event())
    async with fake, engine(fake, clock) as od:
        calls = [asyncio.create_task(od.chat(model="m", messages=HELLO)) for _ in range(20)]
        await fake.received(1)  # held at the gate: every other caller has joined it by now
        assert fake.gate is not None
        fake.gate.set()
        answers = await asyncio.gather(*calls)
    assert len(fake.calls) == 1
    assert all(a == answers[0] for a in answers)
    assert od.metrics.value("overdrive_coalesced_total") == 19


async def test_429_is_waited_out_not_returned(clock: FakeClock, fake: FakeUpstream) -> None:
    fake.script = [status(429, {"retry-after-ms": "700"}), status(429, {"retry-after": "1"})]
    async with engine(fake, clock) as od:
        answer = await finish(clock, od.chat(model="m", messages=HELLO))
    assert answer["object"] == "chat.completion"
    times = [t for t, _, _ in fake.calls]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.7
    assert times[2] - times[1] >= 1.0
    assert od.metrics.value("overdrive_upstream_rate_limited_total") == 2


async def test_server_errors_are_retried_with_backoff(clock: FakeClock, fake: FakeUpstream) -> None:
    fake.script = [status(500), status(503)]
    async with engine(fake, clock) as od:
        answer = await finish(clock, od.chat(model="m", messages=HELLO))
    assert answer["choices"]
    assert len(fake.calls) == 3
    assert od.metrics.value("overdrive_retries_total") == 2


async def test_persistent_server_error_surfaces_after_attempts(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    fake.script = [status(500)] * 10
    async with engine(fake, clock) as od:
        with pytest.raises(UpstreamStatusError) as info:
            await finish(clock, od.chat(model="m", messages=HELLO))
    assert info.value.status == 500
    assert len(fake.calls) == 4  # one try plus three retries


async def test_client_error_is_not_retried_or_cached(clock: FakeClock, fake: FakeUpstream) -> None:
    fake.script = [status(400)]
    async with engine(fake, clock) as od:
        with pytest.raises(UpstreamStatusError, match="HTTP 400"):
            await od.chat(model="m", messages=HELLO)
        await od.chat(model="m", messages=HELLO)
    assert len(fake.calls) == 2


async def test_connection_failures_become_unavailable(clock: FakeClock) -> None:
    with refusing_url() as url:
        async with engine(url, clock) as od:
            with pytest.raises(UpstreamUnavailableError, match="ConnectError"):
                await finish(clock, od.chat(model="m", messages=HELLO))


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]"])
async def test_malformed_upstream_body_is_a_clear_error_and_not_cached(
    clock: FakeClock, fake: FakeUpstream, body: bytes
) -> None:
    fake.script = [raw(200, body)]
    async with engine(fake, clock) as od:
        with pytest.raises(UpstreamProtocolError, match="upstream 'a'"):
            await od.chat(model="m", messages=HELLO)
        assert (await od.chat(model="m", messages=HELLO))["choices"]
    assert len(fake.calls) == 2


async def test_failover_to_another_deployment(clock: FakeClock) -> None:
    seen: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        seen.append("bad")
        return httpx.Response(500, json={"error": {"message": "down"}})

    def up(request: httpx.Request) -> httpx.Response:
        seen.append("good")
        return httpx.Response(200, json={"choices": [], "usage": {}})

    async with FakeServer(down) as bad, FakeServer(up) as good:
        config: dict[str, Any] = {
            "upstreams": [
                {"name": "bad", "base_url": bad.url, "models": ["m"]},
                {"name": "good", "base_url": good.url, "models": ["m"]},
            ],
            "routing": {"health": {"eject_after": 2}},
        }
        async with Overdrive.from_config(config, clock=clock, rng=random.Random(7)) as od:
            for n in range(20):
                ask = [{"role": "user", "content": str(n)}]
                await finish(clock, od.chat(model="m", messages=ask))
            health = od.stats()["health"]
    # Each time the bad deployment was picked, the call failed over to the good
    # one and succeeded; after two failures in a row it was ejected and was
    # offered nothing more (the ejection outlasts this test's few seconds).
    assert seen.count("good") == 20
    assert seen.count("bad") == 2
    assert health["bad"]["state"] == "ejected"
    assert health["good"]["state"] == "healthy"


async def test_calls_are_paced_to_the_rate_limit(clock: FakeClock, fake: FakeUpstream) -> None:
    async with engine(fake, clock, rpm=60) as od:
        prompts = [[{"role": "user", "content": str(i)}] for i in range(3)]
        await finish(clock, asyncio.gather(*(od.chat(model="m", messages=p) for p in prompts)))
    times = [t for t, _, _ in fake.calls]
    assert times[0] < 0.1
    assert times[1] - times[0] == pytest.approx(1.0, abs=0.06)
    assert times[2] - times[1] == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0]"),
        ({"model": "", "messages": HELLO}, "model"),
        ({"model": "m", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": HELLO, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": HELLO, "stream": True}, "stream"),
    ],
)
async def test_bad_requests_name_the_field(
    clock: FakeClock, fake: FakeUpstream, request_: dict[str, Any], field: str
) -> None:
    async with engine(fake, clock) as od:
        with pytest.raises(RequestError) as info:
            await od.chat(**request_)
    assert info.value.field == field
    assert fake.calls == []


async def test_bad_embedding_input_and_unknown_model(clock: FakeClock, fake: FakeUpstream) -> None:
    async with engine(fake, clock) as od:
        with pytest.raises(RequestError, match="`input`"):
            await od.embed([], model="e")
        with pytest.raises(UnknownModelError, match="'nope'"):
            await od.chat(model="nope", messages=HELLO)
    assert fake.calls == []


async def test_cache_can_be_turned_off(clock: FakeClock, fake: FakeUpstream) -> None:
    od = Overdrive.from_config(
        {
            "upstreams": [{"name": "a", "base_url": fake.url, "models": ["m"]}],
            "cache": {"enabled": False},
        },
        clock=clock,
    )
    async with od:
        await od.chat(model="m", messages=HELLO)
        await od.chat(model="m", messages=HELLO)
    assert len(fake.calls) == 2
    assert od.stats()["cache"] is None


async def test_stream_chat_yields_chunks(clock: FakeClock) -> None:
    events = b"".join(
        b'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n' % word for word in (b"a", b"b")
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=events + b"data: [DONE]\n\n")

    async with FakeServer(handler) as upstream, engine(upstream, clock) as od:
        chunks = [c async for c in od.stream_chat(model="m", messages=HELLO)]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["a", "b"]
    assert od.stats()["in_flight"] == {"a": 0}


def _with_cache(fake: FakeUpstream, clock: FakeClock, **cache: Any) -> Overdrive:
    namespace = cache.pop("namespace", "")
    config = {
        "upstreams": [{"name": "a", "base_url": fake.url, "models": ["m"]}],
        "cache": cache,
        "namespace": namespace,
    }
    return Overdrive.from_config(config, clock=clock)


async def test_disk_cache_survives_a_restart(
    clock: FakeClock, fake: FakeUpstream, tmp_path: Path
) -> None:
    path = str(tmp_path / "cache.db")
    async with _with_cache(fake, clock, disk=path) as first:
        await first.chat(model="m", messages=HELLO)
    async with _with_cache(fake, clock, disk=path) as second:
        again = await second.chat(model="m", messages=HELLO)
    assert again["choices"][0]["message"]["content"] == "hello"
    assert len(fake.calls) == 1


async def test_tenant_namespaces_never_share_entries(
    clock: FakeClock, fake: FakeUpstream, tmp_path: Path
) -> None:
    path = str(tmp_path / "cache.db")
    for tenant in ("acme", "globex", "acme"):
        async with _with_cache(fake, clock, disk=path, namespace=tenant) as od:
            await od.chat(model="m", messages=HELLO)
    assert len(fake.calls) == 2


async def test_stale_entry_is_served_while_one_refresh_runs(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    async with _with_cache(fake, clock, ttl="10s", stale="60s") as od:
        await od.chat(model="m", messages=HELLO)
        clock.advance(15)
        replies = await asyncio.gather(*(od.chat(model="m", messages=HELLO) for _ in range(5)))
        await fake.received(2)  # the refresh, in the background
        await fake.settled()
    assert all(r["choices"] for r in replies)
    assert len(fake.calls) == 2  # the first fetch and exactly one background refresh


async def test_a_failed_refresh_is_counted_and_the_stale_answer_kept(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    async with _with_cache(fake, clock, ttl="10s", stale="60s") as od:
        first = await od.chat(model="m", messages=HELLO)
        fake.script = [raw(200, b"<html>oops</html>")]  # the refresh's answer is not JSON
        clock.advance(15)
        assert await od.chat(model="m", messages=HELLO) == first
        await fake.received(2)
        await fake.settled()
        for _ in range(5):  # the refresh's task ends a few turns after its exchange
            await asyncio.sleep(0)
        assert od.metrics.value("overdrive_revalidation_errors_total") == 1
        assert await od.chat(model="m", messages=HELLO) == first  # still served, stale


def _as_tuple(answer: StoredAnswer) -> object:
    return tuple(answer)


def _as_old_tuple(answer: StoredAnswer) -> object:
    return tuple(answer)[:3]  # before answers carried the time they were stored at


def _as_list(answer: StoredAnswer) -> object:
    return list(answer)


@pytest.mark.parametrize("legacy", [_as_tuple, _as_old_tuple, _as_list])
async def test_answers_stored_by_the_previous_version_are_still_served(
    clock: FakeClock,
    fake: FakeUpstream,
    tmp_path: Path,
    legacy: Callable[[StoredAnswer], object],
) -> None:
    path = str(tmp_path / "cache.db")
    call = chat_call({"model": "m", "messages": HELLO})
    async with _with_cache(fake, clock, disk=path) as first:
        answer = await first.chat(model="m", messages=HELLO)
        key = first._key(call)
    await _rewrite(path, key, legacy)
    async with _with_cache(fake, clock, disk=path) as second:
        assert await second.chat(model="m", messages=HELLO) == answer
        dated = await second.request(replace(call, max_age=3600.0))
    assert len(fake.calls) == (2 if legacy is _as_old_tuple else 1)
    assert dated.source == ("upstream" if legacy is _as_old_tuple else "cache")  # no date: old


async def _rewrite(path: str, key: bytes, legacy: Callable[[StoredAnswer], object]) -> None:
    """Store the entry under ``key`` again, as ``legacy`` makes it of the stored answer."""
    disk, codec = DiskTier(path), Codec()
    try:
        entry = await disk.get(key)
        assert entry is not None
        value = codec.decode(key, entry.value)
        assert type(value) is StoredAnswer
        old = Entry(codec.encode(key, legacy(value)), entry.expires_at, entry.stale_until)
        await disk.set(key, old)
    finally:
        await disk.aclose()


async def test_engine_decorator_shares_the_engine_cache(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    calls = 0
    async with engine(fake, clock) as od:

        @od.cached(ttl="1m")
        async def lookup(term: str) -> list[str]:
            nonlocal calls
            calls += 1
            return [term, term]

        assert await lookup("x") == await lookup("x") == ["x", "x"]
    assert calls == 1


async def test_resources_hold_the_cache_budget(clock: FakeClock, fake: FakeUpstream) -> None:
    async with _with_cache(fake, clock, memory="100MB") as od:
        snapshot = od.stats()["resources"]
    assert snapshot["memory"]["owners"] == {"cache.memory": 100_000_000}


def test_a_memory_budget_smaller_than_the_cache_is_a_config_error(clock: FakeClock) -> None:
    config = {
        "upstreams": [{"name": "a", "base_url": "http://u/v1", "models": ["m"]}],
        "cache": {"memory": "200MB"},
        "resources": {"memory": "100MB"},
    }
    with pytest.raises(ConfigError, match=r"resources\.memory"):
        Overdrive.from_config(config, clock=clock)


async def test_metrics_text_and_measure_on_the_engine(clock: FakeClock, fake: FakeUpstream) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async with engine(fake, clock) as od:
        await finish(clock, od.chat(model="m", messages=HELLO))
        with od.measure("overdrive_tool_call", tool="search"):
            clock.advance(0.25)
        text = od.metrics_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["overdrive_requests"]  # the parser drops the _total suffix
    assert sum(s.value for s in requests.samples if s.name == "overdrive_requests_total") == 1
    tool = families["overdrive_tool_call_seconds"]
    sums = [s.value for s in tool.samples if s.name.endswith("_sum")]
    assert sums == [pytest.approx(0.25, rel=0.01)]


async def test_analyse_names_the_rate_limit_when_calls_queue(
    clock: FakeClock, fake: FakeUpstream
) -> None:
    async with engine(fake, clock, rpm=60) as od:
        prompts = [[{"role": "user", "content": str(i)}] for i in range(6)]
        await finish(clock, asyncio.gather(*(od.chat(model="m", messages=p) for p in prompts)))
        analysis = od.analyse()
    assert analysis.bottleneck is not None
    assert analysis.bottleneck.name == "rate_limit"
    assert analysis.bottleneck.tunable == "upstream.a.rpm"
