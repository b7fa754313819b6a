"""Only complete, clean streams are cached; ``stream_options`` is part of a stream's key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from overdrive import Overdrive, UpstreamProtocolError
from overdrive._calls import chat_call
from overdrive.apis import CHAT
from overdrive.cache import StoredAnswer
from overdrive.cache._codec import Codec
from overdrive.cache._disk import DiskTier
from overdrive.cache._tier import Entry
from overdrive.coalesce import StreamReply
from overdrive.sim import SimConfig, SimServer
from tests.stream_upstream import DONE, StreamUpstream, chat_chunk, sse

ASK: Any = [{"role": "user", "content": "a short streamed answer"}]
ERROR_EVENT = sse({"error": {"message": "The server overloaded mid-stream.", "type": "server"}})

CLEAN = [chat_chunk("Hello"), chat_chunk(" error-free world"), DONE]
WITH_ERROR = [chat_chunk("Hello"), ERROR_EVENT, DONE]
TRUNCATED = [chat_chunk("Hello"), chat_chunk(" wor")]


# -- the engine stores only those (the rule itself: tests/apis/test_chat.py) -----


def scripted(body: list[bytes]) -> Any:
    async def script(index: int, request: dict[str, Any]) -> AsyncIterator[bytes]:
        for chunk in body:
            yield chunk

    return script


async def streamed(od: Overdrive, **extra: Any) -> tuple[str, bytes]:
    """The source of one streamed call ("upstream", "cache", ...) and its whole body."""
    body = {"model": "m", "messages": ASK, "stream": True, **extra}
    reply: StreamReply = await od.open_stream(chat_call(body))
    try:
        return reply.source, await reply.aread()
    finally:
        await reply.aclose()


@pytest.mark.parametrize(
    ("body", "stored"), [(CLEAN, True), (WITH_ERROR, False), (TRUNCATED, False)]
)
async def test_only_a_complete_clean_stream_is_replayed_from_the_cache(
    body: list[bytes], stored: bool
) -> None:
    async with StreamUpstream(scripted(body)) as upstream:
        target = {"name": "u", "base_url": upstream.base_url, "models": ["m"]}
        async with Overdrive.from_config({"upstreams": [target]}) as od:
            first = await streamed(od)
            second = await streamed(od)
            not_stored = od.metrics.value("overdrive_streams_not_stored_total")
            misses = od.metrics.value("overdrive_cache_misses_total", op="chat")
    assert first == ("upstream", b"".join(body))  # the error event reaches the client as sent
    assert second == ("cache" if stored else "upstream", b"".join(body))
    assert len(upstream.requests) == (1 if stored else 2)
    assert not_stored == (0 if stored else 2)
    assert misses == (1 if stored else 2)


@pytest.mark.parametrize("keep", [3, 4])
async def test_a_stream_stored_by_the_previous_version_is_replayed(
    tmp_path: Path, keep: int
) -> None:
    path = str(tmp_path / "cache.db")
    async with StreamUpstream(scripted(CLEAN)) as upstream:
        target = {"name": "u", "base_url": upstream.base_url, "models": ["m"]}
        config = {"upstreams": [target], "cache": {"disk": path}}
        async with Overdrive.from_config(config) as od:
            first = await streamed(od)
            call = chat_call({"model": "m", "messages": ASK, "stream": True})
            key = od._key(CHAT.with_stream_usage(call) or call)  # sent asking for its usage
        await _store_as_tuple(path, key, keep)  # the plain tuple older versions wrote
        async with Overdrive.from_config(config) as od:
            again = await streamed(od)
    assert first == ("upstream", b"".join(CLEAN))
    assert again == ("cache", b"".join(CLEAN))
    assert len(upstream.requests) == 1


async def _store_as_tuple(path: str, key: bytes, keep: int) -> None:
    disk, codec = DiskTier(path), Codec()
    try:
        entry = await disk.get(key)
        assert entry is not None
        answer = codec.decode(key, entry.value)
        assert isinstance(answer, StoredAnswer)
        assert isinstance(answer.body, list)  # a stream is kept as its chunks
        old = codec.encode(key, tuple(answer)[:keep])
        await disk.set(key, Entry(old, entry.expires_at, entry.stale_until))
    finally:
        await disk.aclose()


# -- stream_options is part of a stream's key ---------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(seed=2, ttft_s=0.0, per_token_s=0.0, jitter=0.0, models=("m",))
    with SimServer(config) as server:
        yield server


async def test_a_stream_asking_for_usage_and_one_not_share_one_upstream_call(
    sim: SimServer,
) -> None:
    sim.reset()
    usage = {"stream_options": {"include_usage": True}}
    target = {"name": "sim", "base_url": sim.base_url, "models": ["m"]}
    async with Overdrive.from_config({"upstreams": [target]}) as od:
        plain = await streamed(od)
        with_usage = await streamed(od, **usage)
    assert (plain[0], with_usage[0]) == ("upstream", "cache")  # both sent asking for usage
    assert b'"usage":{' in with_usage[1].replace(b" ", b"")
    assert b'"usage":{' not in plain[1].replace(b" ", b"")  # hidden from who did not ask
    assert sim.stats()["requests"]["/v1/chat/completions"] == 1


async def test_stream_options_change_the_key_when_usage_is_not_asked_for(
    sim: SimServer,
) -> None:
    sim.reset()
    usage = {"stream_options": {"include_usage": True}}
    target = {"name": "sim", "base_url": sim.base_url, "models": ["m"]}
    config = {"upstreams": [target], "doors": {"ask_stream_usage": False}}
    async with Overdrive.from_config(config) as od:
        plain = await streamed(od)
        with_usage = await streamed(od, **usage)
        again = await streamed(od, **usage)
        plain_again = await streamed(od)
    assert (plain[0], with_usage[0]) == ("upstream", "upstream")  # not served each other
    assert b'"usage"' in with_usage[1]
    assert b'"usage"' not in plain[1]
    assert again == ("cache", with_usage[1])
    assert plain_again == ("cache", plain[1])
    assert sim.stats()["requests"]["/v1/chat/completions"] == 2


async def test_stream_chat_raises_at_an_error_event() -> None:
    async with StreamUpstream(scripted(WITH_ERROR)) as upstream:
        target = {"name": "u", "base_url": upstream.base_url, "models": ["m"]}
        async with Overdrive.from_config({"upstreams": [target]}) as od:
            chunks: list[dict[str, Any]] = []
            with pytest.raises(UpstreamProtocolError, match="overloaded mid-stream"):
                await _collect(od.stream_chat(model="m", messages=ASK), chunks)
    assert chunks  # what came before the error still came


async def _collect(stream: AsyncIterator[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    async for chunk in stream:
        into.append(chunk)
