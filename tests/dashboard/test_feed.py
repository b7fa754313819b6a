"""The live feed: SSE framing, one snapshot per tick of the engine clock, a bound on clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from overdrive.dashboard import MAX_INTERVAL, MIN_INTERVAL, Dashboard, LiveFeed, Source, sse_frame
from overdrive.dashboard._routes import _interval
from overdrive.monitor import Metrics
from overdrive.monitor.names import REQUESTS
from overdrive.testing import FakeClock
from tests.fakes import pass_time


def test_a_frame_is_one_named_event_with_its_json_on_one_line() -> None:
    frame = sse_frame("snapshot", {"a": [1, 2], "text": "two\nlines"})
    assert frame == b'event: snapshot\ndata: {"a":[1,2],"text":"two\\nlines"}\n\n'


def parse(frame: bytes) -> tuple[str, dict[str, Any]]:
    lines = frame.decode().strip().split("\n")
    assert lines[0].startswith("event: ")
    assert lines[1].startswith("data: ")
    return lines[0][7:], json.loads(lines[1][6:])


async def test_one_snapshot_per_interval_of_the_engine_clock(clock: FakeClock) -> None:
    metrics = Metrics(clock)
    source = Source(metrics, {})
    reply = Dashboard(interval=2.0).live(source, 2.0)
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert isinstance(reply.stream, LiveFeed)
    frames: AsyncIterator[bytes] = reply.stream.__aiter__()
    assert await anext(frames) == b"retry: 2000\n\n"  # EventSource reconnects after 2 s
    event, first = parse(await anext(frames))
    assert event == "snapshot"
    assert first["at"] == 0.0
    metrics.counter(REQUESTS, op="chat").inc(7)
    following = asyncio.ensure_future(anext(frames))
    await pass_time(clock, 1.9)
    assert not following.done()  # waits the whole interval on the engine's clock
    await pass_time(clock, 0.2)
    _, second = parse(await following)
    assert 2.0 <= second["at"] < 2.2
    assert second["totals"]["requests"] == 7
    await reply.stream.aclose()


async def test_past_max_clients_a_feed_is_refused_with_503_until_one_leaves() -> None:
    dashboard = Dashboard(max_clients=2)
    source = Source(Metrics(), {})
    first, second = dashboard.live(source, 1.0), dashboard.live(source, 1.0)
    refused = dashboard.live(source, 1.0)
    assert (first.status, second.status, refused.status) == (200, 200, 503)
    error = json.loads(refused.body)["error"]
    assert error["code"] == "too_many_dashboard_clients"
    assert "2 live clients" in error["message"]
    assert refused.headers["retry-after"] == "5"
    assert refused.stream is None
    assert first.stream is not None
    await first.stream.aclose()
    await first.stream.aclose()  # twice: the slot is given back once
    assert dashboard.clients.active == 1
    assert dashboard.live(source, 1.0).status == 200


async def test_a_feed_read_to_its_end_gives_its_slot_back() -> None:
    waits: list[float] = []

    async def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise ConnectionResetError  # as a relay sees a client gone mid-feed

    board = Dashboard(max_clients=1, wait=wait)
    reply = board.live(Source(Metrics(), {}), 0.5)
    assert reply.stream is not None
    frames = [frame async for frame in _until_error(reply.stream)]
    assert len(frames) == 4
    assert waits == [0.5, 0.5, 0.5]
    assert board.clients.active == 0


async def _until_error(stream: LiveFeed | Any) -> AsyncIterator[bytes]:
    try:
        async for frame in stream:
            yield frame
    except ConnectionResetError:
        return


def test_the_interval_asked_is_held_within_bounds() -> None:
    assert _interval("", 1.0) == 1.0
    assert _interval("interval=2.5", 1.0) == 2.5
    assert _interval("interval=0", 1.0) == MIN_INTERVAL
    assert _interval("interval=1e9", 1.0) == MAX_INTERVAL
    assert _interval("interval=nan", 1.0) == 1.0
    assert _interval("interval=soon", 1.0) == 1.0
