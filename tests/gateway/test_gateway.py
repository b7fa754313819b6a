"""The gateway on uvicorn against the real sim, driven by the real openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from overdrive.apis import registered
from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

HELLO: Any = [{"role": "user", "content": "hello gateway"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(sim: SimServer) -> Iterator[GatewayServer]:
    config = {
        "upstreams": [
            {
                "name": "sim",
                "base_url": sim.base_url,
                "models": ["gpt-4o-mini", "text-embedding-3-small"],
            }
        ]
    }
    with GatewayServer(GatewayApp(config, max_body_bytes=64 * 1024)) as server:
        yield server


@pytest.fixture(scope="module")
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def client(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0) as opened:
        yield opened


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_sync_chat_misses_then_hits(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "cache me"}]
    chat = client.chat.completions.with_raw_response
    first = chat.create(model="gpt-4o-mini", messages=messages, max_tokens=8)
    second = chat.create(model="gpt-4o-mini", messages=messages, max_tokens=8)
    assert first.headers["x-overdrive-cache"] == "MISS"
    assert second.headers["x-overdrive-cache"] == "HIT"
    assert second.headers["x-overdrive-upstream"] == "sim"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content


def test_sync_stream_arrives_as_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=12, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 2
    assert "".join(pieces).strip()


async def test_async_chat_stream_embeddings_and_models(gateway: GatewayServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key="unused", max_retries=0
    ) as aclient:
        chat = await aclient.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        stream = await aclient.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, max_tokens=10, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        vectors = await aclient.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        models = await aclient.models.list()
    assert chat.choices[0].message.content
    assert text
    assert [len(v.embedding) > 0 for v in vectors.data] == [True, True]
    assert {m.id for m in models.data} == {"gpt-4o-mini", "text-embedding-3-small"}


def test_streamed_repeat_is_served_from_the_cache(http: httpx.Client) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 6, "stream": True}
    first = http.post("/v1/chat/completions", json=body)
    second = http.post("/v1/chat/completions", json=body)
    assert first.headers["content-type"].startswith("text/event-stream")
    assert (first.headers["x-overdrive-cache"], second.headers["x-overdrive-cache"]) == (
        "MISS",
        "HIT",
    )
    assert first.content == second.content
    assert first.content.endswith(b"data: [DONE]\n\n")


def test_client_hanging_up_mid_stream_leaves_the_server_serving(
    gateway: GatewayServer, http: httpx.Client
) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 200, "stream": True}
    with (
        httpx.Client(base_url=gateway.url, timeout=10) as other,
        other.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        next(response.iter_bytes())
    assert http.get("/health/live").status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_request_error"),
        (b"[1, 2]", 400, "invalid_request_error"),
        (b'{"model": 5, "messages": []}', 400, "invalid_request_error"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', 400, "invalid_request_error"),
        (
            b'{"model": "gpt-4o-mini", "messages": [], "max_tokens": "x"}',
            400,
            "invalid_request_error",
        ),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
    ],
)
def test_bad_chat_bodies_get_openai_errors(
    http: httpx.Client, content: bytes, status: int, code: str
) -> None:
    response = http.post("/v1/chat/completions", content=content)
    assert_openai_error(response, status, code)
    assert http.get("/health/live").status_code == 200


def test_unknown_model_raises_not_found_in_the_openai_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-3-small", input=[[]])


def test_oversize_bodies_get_413_declared_or_chunked(http: httpx.Client) -> None:
    big = json.dumps({"model": "gpt-4o-mini", "input": "x" * 100_000}).encode()
    declared = http.post("/v1/embeddings", content=big)
    chunked = http.post("/v1/embeddings", content=iter([big[:50_000], big[50_000:]]))
    assert_openai_error(declared, 413, "request_too_large")
    assert_openai_error(chunked, 413, "request_too_large")
    assert http.get("/v1/models").status_code == 200


def test_an_oversize_body_to_the_messages_api_gets_anthropics_error_shape(
    http: httpx.Client,
) -> None:
    big = json.dumps({"model": "claude", "max_tokens": 5, "messages": ["x" * 100_000]}).encode()
    response = http.post("/v1/messages", content=big)
    assert response.status_code == 413
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "request_too_large"


def test_wrong_paths_and_methods(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing"), 404, "unknown_url")
    wrong = http.get("/v1/chat/completions")
    assert_openai_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    assert_openai_error(http.delete("/v1/models"), 405, "method_not_allowed")


def test_health(http: httpx.Client) -> None:
    assert http.get("/health/live").json() == {"status": "live"}
    ready = http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "upstreams": ["sim"]}


def test_metrics_parse_as_prometheus(http: httpx.Client) -> None:
    http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "m"})
    response = http.get("/metrics")
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert "overdrive_requests" in names


def test_openapi_lists_every_route(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    # Every registered API family's route, and the gateway's own.
    assert set(document["paths"]) == {f"/v1{api.suffix}" for api in registered()} | {
        "/v1/models",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/v1/overdrive/report",
        "/openapi.json",
    }
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    schema = chat["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"model", "messages", "max_tokens", "stream"} <= set(
        document["components"]["schemas"][schema]["properties"]
    )
