"""A trace started by the caller continues through the real gateway, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer
from tests.trace.receiver import Receiver

MODEL = "gpt-4o-mini"
SERVER = 2  # the OTLP SpanKind number
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def gateway(otlp: Receiver) -> Iterator[GatewayServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, jitter=0.0)) as sim:
        config = {
            "upstreams": [{"name": "sim", "base_url": sim.base_url, "models": [MODEL]}],
            "tracing": {"enabled": True, "endpoint": otlp.endpoint, "sample_ratio": 1.0},
        }
        with GatewayServer(GatewayApp(config)) as server:
            yield server


def chat(gateway: GatewayServer, content: str, headers: dict[str, str]) -> httpx.Response:
    body: Any = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    engine = gateway.app.engine
    assert engine is not None
    assert engine.tracer is not None
    assert engine.tracer.force_flush()
    return response


def test_the_callers_trace_is_continued(gateway: GatewayServer, otlp: Receiver) -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc"}
    chat(gateway, "continue my trace", headers)
    spans = [s for s in otlp.named(f"chat {MODEL}") if s.span.trace_id.hex() == TRACE_ID]
    assert len(spans) == 1
    span = spans[0].span
    assert span.parent_span_id.hex() == PARENT_ID
    assert span.kind == SERVER
    assert span.trace_state == "vendor=abc"
    stages = {child.name for child in otlp.children_of(spans[0])}
    assert {"cache.lookup", "queue.wait", "upstream.attempt"} <= stages


def test_a_caller_without_a_trace_starts_one_at_the_gateway(
    gateway: GatewayServer, otlp: Receiver
) -> None:
    chat(gateway, "no traceparent here", {})
    roots = [s for s in otlp.named(f"chat {MODEL}") if not s.span.parent_span_id]
    assert len(roots) == 1
    assert roots[0].span.kind == SERVER


def test_an_unsampled_caller_is_not_traced(gateway: GatewayServer, otlp: Receiver) -> None:
    before = len(otlp.named(f"chat {MODEL}"))
    unsampled = f"00-{'1' * 32}-{PARENT_ID}-00"
    chat(gateway, "do not trace me", {"traceparent": unsampled})
    assert len(otlp.named(f"chat {MODEL}")) == before


def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    gateway: GatewayServer, otlp: Receiver
) -> None:
    chat(gateway, "garbled traceparent", {"traceparent": "00-not-a-trace-01"})
    spans = [s for s in otlp.named(f"chat {MODEL}") if s.span.kind == SERVER]
    newest = max(spans, key=lambda s: s.span.start_time_unix_nano)
    assert not newest.span.parent_span_id
    assert newest.span.trace_id.hex() != TRACE_ID
