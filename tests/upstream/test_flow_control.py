"""Flow control as the engine applies it: admission, budgets, hedging, feedback, limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from overdrive import (
    Overdrive,
    QueueTimeoutError,
    UpstreamStatusError,
    UpstreamUnavailableError,
    admission,
)
from overdrive.flow import AdaptiveLimit
from overdrive.testing import FakeClock
from tests.fakes import (
    FakeServer,
    FakeUpstream,
    chat_response,
    embeddings_response,
    finish,
    hang_up,
    io_turns,
    refusing_url,
    status,
)


def build(
    at: FakeServer | str,
    clock: FakeClock,
    upstream: dict[str, Any] | None = None,
    **sections: Any,
) -> Overdrive:
    """An engine whose one upstream, "a", is the server ``at`` (or a URL)."""
    url = at if isinstance(at, str) else at.url
    config: dict[str, Any] = {
        "upstreams": [{"name": "a", "base_url": url, "models": ["m", "e"], **(upstream or {})}],
        "cache": {"enabled": False},
        "retry": {"base": "100ms", "cap": "1s"},
        **sections,
    }
    return Overdrive.from_config(config, clock=clock)


def ask(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


async def test_priority_calls_overtake_waiting_ones(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    async with fake, build(fake, clock, {"rpm": 60, "burst": 1.0}) as od:

        async def chat(content: str, priority: int) -> None:
            with admission(priority=priority):
                await od.chat(model="m", messages=ask(content))

        first = asyncio.create_task(chat("first", 0))
        await clock.run_for(0.05)
        low = [asyncio.create_task(chat(f"low{i}", 0)) for i in range(2)]
        await clock.run_for(0.05)
        urgent = asyncio.create_task(chat("urgent", 9))
        await finish(clock, asyncio.gather(first, *low, urgent))
    order = [body["messages"][0]["content"] for _, _, body in fake.calls]
    assert order == ["first", "urgent", "low0", "low1"]


async def test_a_call_past_its_deadline_never_reaches_the_upstream(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    async with fake, build(fake, clock, {"rpm": 60, "burst": 1.0}) as od:
        await finish(clock, od.chat(model="m", messages=ask("takes the slot")))
        with admission(timeout="500ms"), pytest.raises(QueueTimeoutError) as caught:
            await finish(clock, od.chat(model="m", messages=ask("in a hurry")))
    assert caught.value.queue == "a"
    assert [body["messages"][0]["content"] for _, _, body in fake.calls] == ["takes the slot"]


async def test_configured_queue_timeout_applies_by_default(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    upstream = {"rpm": 60, "burst": 1.0, "queue_timeout": "200ms"}
    async with fake, build(fake, clock, upstream) as od:
        await finish(clock, od.chat(model="m", messages=ask("one")))
        with pytest.raises(QueueTimeoutError):
            await finish(clock, od.chat(model="m", messages=ask("two")))


async def test_model_limits_are_separate_from_the_endpoint_limit(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    upstream = {"rpm": 60, "burst": 1.0, "model_limits": {"e": {"rpm": 6000}}}
    batching = {"embeddings": {"enabled": False}}
    async with fake, build(fake, clock, upstream, batching=batching) as od:
        await finish(clock, od.chat(model="m", messages=ask("uses the endpoint's slot")))
        texts = [f"t{i}" for i in range(5)]
        await finish(clock, asyncio.gather(*(od.embed(t, model="e") for t in texts)))
    embed_times = [t for t, path, _ in fake.calls if path.endswith("/embeddings")]
    assert len(embed_times) == 5
    assert max(embed_times) < 0.2  # not paced at the endpoint's 1/s


async def test_retry_budget_stops_hammering_a_failing_upstream(clock: FakeClock) -> None:
    fake = FakeUpstream(clock, script=[status(500)] * 1000)
    retry = {
        "base": "10ms",
        "cap": "20ms",
        "attempts": 3,
        "budget_ratio": 0.1,
        "budget_min_per_second": 0,
    }
    async with fake, build(fake, clock, retry=retry) as od:
        calls = [od.chat(model="m", messages=ask(str(i))) for i in range(50)]
        outcomes = await finish(clock, asyncio.gather(*calls, return_exceptions=True))
    assert all(isinstance(o, UpstreamStatusError) and o.status == 500 for o in outcomes)
    # 50 first attempts earn 5 retries; without a budget it would be 150.
    assert len(fake.calls) <= 50 + 5
    assert od.metrics.value("overdrive_retry_budget_spent_total") >= 40


NO_RETRY_BUDGET = {"attempts": 3, "budget_ratio": 0.0, "budget_min_per_second": 0}


async def test_retry_budget_also_bounds_dropped_connections(clock: FakeClock) -> None:
    fake = FakeUpstream(clock, script=[hang_up] * 1000)
    async with fake, build(fake, clock, retry=NO_RETRY_BUDGET) as od:
        with pytest.raises(UpstreamUnavailableError, match="retry budget spent"):
            await finish(clock, od.chat(model="m", messages=ask("x")))
    assert len(fake.calls) == 1


async def test_retry_budget_also_bounds_refused_connections(clock: FakeClock) -> None:
    with refusing_url() as url:
        async with build(url, clock, retry=NO_RETRY_BUDGET) as od:
            with pytest.raises(UpstreamUnavailableError, match=r"ConnectError.*retry budget spent"):
                await finish(clock, od.chat(model="m", messages=ask("x")))
    # Nothing reaches a port that refuses: the engine's own count of attempts it is.
    assert od.metrics.value("overdrive_upstream_requests_total", upstream="a") == 1


class SlowOnce:
    """A handler: answers after ``fast`` seconds, except the calls listed in ``slow_calls``."""

    def __init__(self, clock: FakeClock, fast: float, slow: float, slow_calls: set[int]) -> None:
        self.clock = clock
        self.fast = fast
        self.slow = slow
        self.slow_calls = slow_calls
        self.started = 0
        self.finished = 0
        self.cancelled = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        number = self.started
        self.started += 1
        try:
            await self.clock.sleep(self.slow if number in self.slow_calls else self.fast)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        body = json.loads(request.content)
        count = len(body["input"]) if isinstance(body["input"], list) else 1
        return httpx.Response(200, json=embeddings_response(body["model"], count))


async def test_hedging_cuts_the_slow_tail(clock: FakeClock) -> None:
    handler = SlowOnce(clock, fast=0.1, slow=30.0, slow_calls={40})
    sections: dict[str, Any] = {
        "retry": {"hedge": ["embeddings"], "budget_min_per_second": 1},
        "batching": {"embeddings": {"enabled": False}},
    }
    async with FakeServer(handler) as server, build(server, clock, **sections) as od:
        for i in range(40):  # learn what normal latency is
            await finish(clock, od.embed(f"warm{i}", model="e"))
        started = clock.now()
        answer = await finish(clock, od.embed("unlucky", model="e"))
        took = clock.now() - started
        assert od.stats()["in_flight"] == {"a": 0}  # the abandoned copy gave its slot back
        await server.settled()  # the slow copy's work ends when the engine hangs up on it
        assert handler.cancelled == 1
    assert answer["data"]
    assert took < 1.0  # not the 30 s of the slow attempt
    assert od.metrics.value("overdrive_hedges_total", op="embeddings") == 1


async def test_no_hedge_without_the_option(clock: FakeClock) -> None:
    handler = SlowOnce(clock, fast=0.1, slow=3.0, slow_calls={40})
    batching = {"embeddings": {"enabled": False}}
    async with FakeServer(handler) as server, build(server, clock, batching=batching) as od:
        for i in range(41):
            await finish(clock, od.embed(f"x{i}", model="e"))
    assert handler.started == 41
    assert od.metrics.value("overdrive_hedges_total", op="embeddings") == 0


async def test_exhausted_ratelimit_headers_pause_the_next_call(clock: FakeClock) -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "30s",
    }

    def exhausted(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=chat_response("m"), headers=headers)

    fake = FakeUpstream(clock, script=[exhausted])
    async with fake, build(fake, clock) as od:  # no rpm configured
        await finish(clock, od.chat(model="m", messages=ask("one")))
        await finish(clock, od.chat(model="m", messages=ask("two")))
    times = [t for t, _, _ in fake.calls]
    # Learnt: the limit is 60/min and the bucket is empty, so the next call waits 1 s.
    assert times[1] - times[0] == pytest.approx(1.0, abs=0.06)


async def test_429s_shrink_the_adaptive_concurrency_limit(clock: FakeClock) -> None:
    fake = FakeUpstream(clock, script=[status(429, {"retry-after-ms": "100"})] * 3)
    async with fake, build(fake, clock) as od:
        limit = od.upstreams()[0].concurrency
        assert isinstance(limit, AdaptiveLimit)
        before = limit.limit
        await finish(clock, od.chat(model="m", messages=ask("x")))
        assert limit.limit < before


async def test_fixed_concurrency_caps_calls_in_flight(clock: FakeClock) -> None:
    gate = asyncio.Event()
    fake = FakeUpstream(clock, gate=gate)
    async with fake, build(fake, clock, {"concurrency": 2}) as od:
        tasks = [asyncio.create_task(od.chat(model="m", messages=ask(str(i)))) for i in range(5)]
        await fake.received(2)
        await io_turns()  # time enough for a third to arrive, were it sent
        assert len(fake.calls) == 2
        gate.set()
        await finish(clock, asyncio.gather(*tasks))
    assert len(fake.calls) == 5


async def test_cancelled_caller_gives_its_slot_back(clock: FakeClock) -> None:
    gate = asyncio.Event()
    fake = FakeUpstream(clock, gate=gate)
    async with fake, build(fake, clock, {"concurrency": 1}) as od:
        stuck = asyncio.create_task(od.chat(model="m", messages=ask("stuck")))
        await fake.received(1)  # at the upstream, holding the only slot
        stuck.cancel()
        await fake.settled()  # the upstream saw the caller's connection go
        assert od.stats()["in_flight"] == {"a": 0}
        gate.set()
        await finish(clock, od.chat(model="m", messages=ask("next")))


async def test_headers_set_priority_and_deadline_through_the_http_client(
    clock: FakeClock,
) -> None:
    fake = FakeUpstream(clock)
    async with fake, build(fake, clock, {"rpm": 60, "burst": 1.0}) as od:
        client = od.http_client(flavour="httpx", base_url="http://any.test/v1")

        async def post(content: str, **headers: str) -> httpx.Response:
            body = {"model": "m", "messages": ask(content)}
            return await client.post("/chat/completions", json=body, headers=headers)

        first = await finish(clock, post("first"))
        late = asyncio.create_task(post("late", **{"x-overdrive-queue-timeout": "300ms"}))
        bad = await finish(clock, post("bad", **{"x-overdrive-priority": "high"}))
        answer = await finish(clock, late)
    assert first.status_code == 200
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "queue_timeout"
    assert bad.status_code == 400
    assert "x-overdrive-priority" in bad.json()["error"]["message"]


async def test_a_full_queue_answers_429_through_the_http_client(clock: FakeClock) -> None:
    fake = FakeUpstream(clock)
    async with fake, build(fake, clock, {"rpm": 60, "burst": 1.0, "max_waiting": 1}) as od:
        client = od.http_client(flavour="httpx", base_url="http://any.test/v1")

        async def post(content: str) -> httpx.Response:
            body = {"model": "m", "messages": ask(content)}
            return await client.post("/chat/completions", json=body)

        await finish(clock, post("first"))
        waiting = asyncio.create_task(post("waits"))
        await clock.run_for(0.05)
        refused = await finish(clock, post("refused"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert (await finish(clock, waiting)).status_code == 200


async def test_embedding_batches_keep_collecting_while_the_queue_is_long(
    clock: FakeClock,
) -> None:
    fake = FakeUpstream(clock)
    async with fake, build(fake, clock, {"rpm": 60, "burst": 1.0}) as od:
        chats = [asyncio.create_task(od.chat(model="m", messages=ask(str(i)))) for i in range(4)]
        await clock.run_for(0.05)  # one went, three wait: a 3 s backlog
        lookups = []
        for i in range(10):  # one lookup every 100 ms, far apart for a 5 ms batch wait
            lookups.append(asyncio.create_task(od.embed(f"text {i}", model="e")))
            await clock.run_for(0.1)
        await finish(clock, asyncio.gather(*chats, *lookups))
    batches = [body["input"] for _, path, body in fake.calls if path.endswith("/embeddings")]
    assert len(batches) == 1
    assert len(batches[0]) == 10


@pytest.mark.parametrize(("charged", "second_waits"), [("usage", 0.0), ("reserved", 1.0)])
async def test_unused_tokens_are_given_back_only_if_the_provider_does(
    clock: FakeClock, charged: str, second_waits: float
) -> None:
    fake = FakeUpstream(clock)  # answers use 5 prompt + 2 completion tokens
    upstream = {"tpm": 6000, "burst": 1.0, "tokens_charged": charged}  # 100 tokens/s
    async with fake, build(fake, clock, upstream) as od:
        await finish(clock, od.chat(model="m", messages=ask("a"), max_tokens=93))
        await finish(clock, od.chat(model="m", messages=ask("b"), max_tokens=93))
    times = [t for t, _, _ in fake.calls]
    assert times[1] - times[0] == pytest.approx(second_waits, abs=0.06)


async def test_streams_report_their_tokens_to_the_concurrency_limit(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = b"".join(b'data: {"choices": [{"delta": {"content": "w"}}]}\n\n' for _ in range(9))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=events + b"data: [DONE]\n\n")

    seen: list[int] = []
    original = AdaptiveLimit.record

    def record(
        self: AdaptiveLimit, latency_s: float, *, tokens: int = 1, outcome: Any = "ok"
    ) -> None:
        seen.append(tokens)
        original(self, latency_s, tokens=tokens, outcome=outcome)

    monkeypatch.setattr(AdaptiveLimit, "record", record)
    async with FakeServer(handler) as server, build(server, clock) as od:
        chunks = [c async for c in od.stream_chat(model="m", messages=ask("s"))]
    assert len(chunks) == 9
    assert seen == [9]
