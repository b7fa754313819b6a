"""Spans of real calls through the engine to the sim, received by a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from overdrive import Overdrive, UpstreamUnavailableError
from overdrive._calls import chat_call
from overdrive.sim import SimConfig, SimServer
from tests.fakes import refusing_url
from tests.trace.receiver import Received, Receiver

HELLO: Any = [{"role": "user", "content": "hello traces"}]
MODEL = "gpt-4o-mini"
CLIENT, SERVER, INTERNAL = 3, 2, 1  # the OTLP SpanKind numbers


def traced(base_url: str, otlp: Receiver, **tracing: Any) -> dict[str, Any]:
    """A config with one upstream and tracing on, every call sampled unless told."""
    return {
        "upstreams": [
            {"name": "sim", "base_url": base_url, "models": [MODEL, "text-embedding-3-small"]}
        ],
        "retry": {"attempts": 1, "base": 0.001, "cap": 0.001},
        "tracing": {"enabled": True, "endpoint": otlp.endpoint, "sample_ratio": 1.0, **tracing},
    }


@pytest.fixture
async def od(sim: SimServer, otlp: Receiver) -> AsyncIterator[Overdrive]:
    async with Overdrive.from_config(traced(sim.base_url, otlp)) as engine:
        yield engine


def flushed(od: Overdrive) -> None:
    assert od.tracer is not None
    assert od.tracer.force_flush()


def only(otlp: Receiver, name: str = f"chat {MODEL}") -> Received:
    found = otlp.named(name)
    assert len(found) == 1, found
    return found[0]


async def test_a_miss_has_the_genai_attributes_and_its_stages(
    od: Overdrive, otlp: Receiver
) -> None:
    result = await od.request(chat_call({"model": MODEL, "messages": HELLO, "max_tokens": 12}))
    answer = json.loads(result.body)
    flushed(od)
    span = only(otlp)
    assert span.span.kind == CLIENT
    assert span.resource["service.name"] == "overdrive"
    usage = answer["usage"]
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.max_tokens": 12,
        "gen_ai.response.model": answer["model"],
        "gen_ai.response.id": answer["id"],
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "overdrive.op": "chat",
        "overdrive.cache": "miss",
        "overdrive.attempts": 1,
        "overdrive.upstream": "sim",
        "overdrive.status_code": 200,
        "overdrive.queue_wait_s": result.queued_s,
        "overdrive.cost_usd": result.cost,
        "server.address": "127.0.0.1",
    }
    assert result.cost > 0  # gpt-4o-mini has a price: the answer's usage at it
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    stages = {child.name: child for child in otlp.children_of(span)}
    assert set(stages) == {"cache.lookup", "queue.wait", "upstream.attempt"}
    attempt = stages["upstream.attempt"]
    assert attempt.attributes == {
        "overdrive.upstream": "sim",
        "overdrive.attempt": 1,
        "http.response.status_code": 200,
    }
    # The stages sit inside the call, in the order they ran.
    lookup, queued = stages["cache.lookup"].span, stages["queue.wait"].span
    assert span.span.start_time_unix_nano <= lookup.start_time_unix_nano
    assert lookup.end_time_unix_nano <= queued.start_time_unix_nano + 1_000
    assert queued.end_time_unix_nano <= attempt.span.start_time_unix_nano + 1_000
    assert attempt.span.end_time_unix_nano <= span.span.end_time_unix_nano
    assert {child.span.trace_id for child in stages.values()} == {span.span.trace_id}


async def test_a_hit_is_marked_and_sends_nothing(od: Overdrive, otlp: Receiver) -> None:
    await od.chat(model=MODEL, messages=HELLO)
    await od.chat(model=MODEL, messages=HELLO)
    flushed(od)
    first, second = otlp.named(f"chat {MODEL}")
    assert first.attributes["overdrive.cache"] == "miss"
    assert second.attributes["overdrive.cache"] == "hit"
    assert "gen_ai.usage.input_tokens" not in second.attributes  # no tokens spent on it
    assert [child.name for child in otlp.children_of(second)] == ["cache.lookup"]


async def test_coalesced_calls_are_marked(od: Overdrive, otlp: Receiver) -> None:
    await asyncio.gather(*(od.chat(model=MODEL, messages=HELLO, max_tokens=7) for _ in range(3)))
    flushed(od)
    spans = otlp.named(f"chat {MODEL}")
    verdicts = sorted(s.attributes["overdrive.cache"] for s in spans)
    assert verdicts == ["coalesced", "coalesced", "miss"]
    for span in spans:
        stages = [child.name for child in otlp.children_of(span)]
        if span.attributes["overdrive.cache"] == "coalesced":
            assert stages == ["cache.lookup", "coalesce.wait"]  # it sent nothing itself
            assert "gen_ai.usage.input_tokens" not in span.attributes
        else:
            assert sorted(stages) == ["cache.lookup", "queue.wait", "upstream.attempt"]


async def test_embeddings_are_named_by_operation(od: Overdrive, otlp: Receiver) -> None:
    await od.embed(["one", "two"], model="text-embedding-3-small")
    flushed(od)
    span = only(otlp, "embeddings text-embedding-3-small")
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.usage.input_tokens"] > 0


async def test_a_failing_upstream_sets_error_type_and_shows_the_retry(otlp: Receiver) -> None:
    with refusing_url() as url:
        async with Overdrive.from_config(traced(url, otlp)) as od:
            with pytest.raises(UpstreamUnavailableError):
                await od.chat(model=MODEL, messages=HELLO)
            flushed(od)
    span = only(otlp)
    assert span.attributes["error.type"] == "UpstreamUnavailableError"
    assert span.span.status.code == 2  # STATUS_CODE_ERROR
    attempts = [c for c in otlp.children_of(span) if c.name == "upstream.attempt"]
    assert [a.attributes["error.type"] for a in attempts] == ["ConnectError", "ConnectError"]
    assert [a.attributes["overdrive.attempt"] for a in attempts] == [1, 2]


async def test_an_error_answer_sets_error_type_to_its_status(otlp: Receiver) -> None:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, error_rate=1.0)) as failing:
        async with Overdrive.from_config(traced(failing.base_url, otlp)) as od:
            result = await od.request(chat_call({"model": MODEL, "messages": HELLO}))
            flushed(od)
    assert result.status >= 500
    span = only(otlp)
    assert span.attributes["error.type"] == str(result.status)
    attempts = [c for c in otlp.children_of(span) if c.name == "upstream.attempt"]
    assert len(attempts) == 2  # the first and its retry


async def test_a_stream_has_a_span_to_its_first_byte(od: Overdrive, otlp: Receiver) -> None:
    chunks = [chunk async for chunk in od.stream_chat(model=MODEL, messages=HELLO)]
    assert chunks
    flushed(od)
    span = only(otlp)
    assert span.attributes["overdrive.stream"] is True
    assert span.attributes["overdrive.cache"] == "miss"
    assert span.attributes["overdrive.upstream"] == "sim"
    assert "upstream.attempt" in {c.name for c in otlp.children_of(span)}


async def test_content_is_captured_only_when_asked(sim: SimServer, otlp: Receiver) -> None:
    async with Overdrive.from_config(traced(sim.base_url, otlp, capture_content=True)) as od:
        answer = await od.chat(model=MODEL, messages=HELLO, max_tokens=5)
        flushed(od)
    span = only(otlp)
    assert json.loads(span.attributes["gen_ai.input.messages"]) == HELLO
    assert json.loads(span.attributes["gen_ai.output.messages"]) == answer["choices"]


async def test_content_is_not_captured_by_default(od: Overdrive, otlp: Receiver) -> None:
    await od.chat(model=MODEL, messages=HELLO)
    flushed(od)
    assert not any("messages" in key for key in only(otlp).attributes)


async def test_ratio_zero_traces_nothing_but_a_sampled_caller(
    sim: SimServer, otlp: Receiver
) -> None:
    async with Overdrive.from_config(traced(sim.base_url, otlp, sample_ratio=0.0)) as od:
        await od.chat(model=MODEL, messages=HELLO, max_tokens=3)
        caller = remote_parent()
        token = otel_context.attach(trace.set_span_in_context(caller))
        try:
            await od.chat(model=MODEL, messages=HELLO, max_tokens=4)
        finally:
            otel_context.detach(token)
        flushed(od)
    span = only(otlp)  # the caller's only
    assert span.span.trace_id == caller.get_span_context().trace_id.to_bytes(16, "big")


def remote_parent(sampled: bool = True) -> NonRecordingSpan:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, flags)
    return NonRecordingSpan(context)


async def test_a_call_from_another_loop_keeps_its_callers_trace(
    od: Overdrive, otlp: Receiver
) -> None:
    await od.chat(model=MODEL, messages=HELLO, max_tokens=2)  # the engine's home: this loop
    caller = remote_parent()

    async def elsewhere() -> None:
        token = otel_context.attach(trace.set_span_in_context(caller))
        try:
            await od.chat(model=MODEL, messages=HELLO, max_tokens=3)
        finally:
            otel_context.detach(token)

    # Another thread's own loop: the call is forwarded to the home loop (_home.py).
    await asyncio.to_thread(asyncio.run, elsewhere())
    flushed(od)
    forwarded = [s for s in otlp.named(f"chat {MODEL}") if s.span.parent_span_id]
    assert len(forwarded) == 1
    assert forwarded[0].span.parent_span_id == (0xB7AD6B7169203331).to_bytes(8, "big")
    assert forwarded[0].span.trace_id == (0x0AF7651916CD43DD8448EB211C80319C).to_bytes(16, "big")


async def test_the_standard_variables_name_the_endpoint_and_service(
    sim: SimServer, otlp: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agent-42")
    config = traced(sim.base_url, otlp)
    del config["tracing"]["endpoint"]
    async with Overdrive.from_config(config) as od:
        await od.chat(model=MODEL, messages=HELLO, max_tokens=9)
        flushed(od)
    assert only(otlp).resource["service.name"] == "agent-42"
