"""Streams through the engine are bounded: body size, slow coalesced readers, idle readers.

The upstream is a raw socket (tests/stream_upstream.py): the production
stream client reads every byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from overdrive import Overdrive, SlowReaderError, UpstreamProtocolError
from overdrive._calls import chat_call
from overdrive.coalesce import StreamReply
from overdrive.testing import FakeClock
from tests.stream_upstream import DONE, StreamUpstream, chat_chunk

KB = 1024
ASK: Any = [{"role": "user", "content": "stream, please"}]
CHUNK = chat_chunk("x" * 900)  # about 1 KB on the wire


def config(upstream: StreamUpstream, **options: Any) -> dict[str, Any]:
    limits = {k: v for k, v in options.items() if k == "max_response_bytes"}
    gateway = {k: v for k, v in options.items() if k.startswith("stream_")}
    target = {"name": "u", "base_url": upstream.base_url, "models": ["m"], **limits}
    return {"upstreams": [target], "gateway": gateway}


async def open_chat(od: Overdrive) -> StreamReply:
    return await od.open_stream(chat_call({"model": "m", "messages": ASK, "stream": True}))


async def read_all(reply: StreamReply) -> bytes:
    try:
        return await reply.aread()
    finally:
        await reply.aclose()


def finite(chunks: int, gate: asyncio.Event | None = None) -> Any:
    async def script(index: int, request: dict[str, Any]) -> AsyncIterator[bytes]:
        if gate is not None:
            await gate.wait()
        for _ in range(chunks):
            yield CHUNK
        yield DONE

    return script


async def endless(index: int, request: dict[str, Any]) -> AsyncIterator[bytes]:
    while True:
        yield CHUNK


async def test_a_streamed_body_over_max_response_bytes_is_cut_and_not_stored() -> None:
    async with (
        StreamUpstream(finite(200)) as upstream,  # about 200 KB
        Overdrive.from_config(config(upstream, max_response_bytes=64 * KB)) as od,
    ):
        for _ in range(2):
            reply = await open_chat(od)
            assert reply.source == "upstream"  # the first was not stored
            with pytest.raises(UpstreamProtocolError, match="max_response_bytes"):
                await read_all(reply)
        assert od.stats()["in_flight"] == {"u": 0}
    assert len(upstream.requests) == 2


async def test_the_same_body_within_the_bound_is_stored() -> None:
    async with (
        StreamUpstream(finite(200)) as upstream,
        Overdrive.from_config(config(upstream)) as od,
    ):
        assert (await read_all(await open_chat(od))).endswith(DONE)
        again = await open_chat(od)
        assert again.source == "cache"
        assert (await read_all(again)).count(CHUNK) == 200
    assert len(upstream.requests) == 1


async def test_a_slow_coalesced_reader_is_cut_while_the_fast_one_finishes() -> None:
    gate = asyncio.Event()
    async with (
        StreamUpstream(finite(100, gate)) as upstream,  # 100 KB, the bound 16 KB
        Overdrive.from_config(config(upstream, stream_buffer_bytes=16 * KB)) as od,
    ):
        fast = await open_chat(od)
        slow = await open_chat(od)
        assert (fast.source, slow.source) == ("upstream", "coalesced")
        gate.set()
        body = await read_all(fast)
        assert body.count(CHUNK) == 100
        assert body.endswith(DONE)
        with pytest.raises(SlowReaderError, match="behind") as cut:
            await read_all(slow)
        assert cut.value.behind > 16 * KB
        # Past the bound it was neither joinable nor stored: this one goes upstream.
        again = await open_chat(od)
        assert again.source == "upstream"
        await read_all(again)
    assert len(upstream.requests) == 2


async def test_an_idle_reader_is_dropped_and_its_upstream_stream_closed(
    clock: FakeClock,
) -> None:
    async with StreamUpstream(endless) as upstream:
        options = config(upstream, stream_idle_timeout=2.0)
        async with Overdrive.from_config(options, clock=clock) as od:
            reply = await open_chat(od)
            chunks = aiter(reply)
            assert await anext(chunks)
            await clock.run_for(1.5)
            assert not upstream.hung_up.is_set()
            await clock.run_for(1.0)  # 2.5 s without taking anything
            await asyncio.wait_for(upstream.hung_up.wait(), 10)
            assert od.stats()["in_flight"] == {"u": 0}
            with pytest.raises(SlowReaderError, match="took nothing for 2s"):
                await anext(chunks)
            await reply.aclose()
