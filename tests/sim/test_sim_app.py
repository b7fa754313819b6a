"""The ASGI app in-process, with a FakeClock stepping every simulated wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from overdrive._json import dumps, loads
from overdrive.sim import SimApp, SimConfig
from overdrive.sim._content import chat_digest, completion_words
from overdrive.testing import FakeClock

INSTANT = SimConfig(ttft_s=0.0, per_token_s=0.0, embed_base_s=0.0, embed_per_item_s=0.0)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def connect(app: SimApp, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://sim", headers=headers)


@pytest.fixture
async def instant() -> AsyncIterator[httpx.AsyncClient]:
    async with connect(SimApp(INSTANT)) as client:
        yield client


def words_for(request: dict[str, Any]) -> int:
    digest = chat_digest(request["model"], request["messages"], request.get("max_tokens"))
    return len(completion_words(digest, request.get("max_tokens"))[0])


async def test_chat_waits_ttft_plus_tokens_on_the_clock(clock: FakeClock) -> None:
    config = SimConfig(ttft_s=1.0, per_token_s=0.1, jitter=0.0)
    async with connect(SimApp(config, clock=clock)) as client:
        task = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        due = 1.0 + 0.1 * words_for(CHAT)
        await clock.run_for(due - 0.05)
        assert not task.done()
        await clock.run_for(0.1)
        response = await task
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == words_for(CHAT)


async def test_slow_factor_stretches_latency(clock: FakeClock) -> None:
    app = SimApp(SimConfig(embed_base_s=1.0, embed_per_item_s=0.5, jitter=0.0), clock=clock)
    app.set_faults(slow_factor=2.0)
    async with connect(app) as client:
        body = {"model": "e", "input": ["a", "b"]}
        task = asyncio.create_task(client.post("/v1/embeddings", json=body))
        await clock.run_for(3.9)  # 2 x (1.0 + 2 x 0.5) = 4.0
        assert not task.done()
        await clock.run_for(0.2)
        assert (await task).status_code == 200


def test_jitter_is_seeded() -> None:
    def draws(seed: int) -> list[float]:
        app = SimApp(SimConfig(seed=seed, jitter=0.5))
        return [app._delay(1.0) for _ in range(5)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert len(set(draws(7))) == 5
    assert SimApp(SimConfig(jitter=0.0))._delay(1.0) == 1.0


async def test_chat_completion_shape(instant: httpx.AsyncClient) -> None:
    response = await instant.post("/v1/chat/completions", json=CHAT)
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    assert len(choice["message"]["content"].split()) == body["usage"]["completion_tokens"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_max_tokens_caps_with_finish_reason_length(instant: httpx.AsyncClient) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        response = await instant.post("/v1/chat/completions", json={**CHAT, field: 3})
        body = response.json()
        assert body["usage"]["completion_tokens"] == 3
        assert body["choices"][0]["finish_reason"] == "length"


async def test_default_max_tokens_caps_when_request_has_none() -> None:
    async with connect(SimApp(SimConfig(ttft_s=0, per_token_s=0, default_max_tokens=2))) as client:
        body = (await client.post("/v1/chat/completions", json=CHAT)).json()
    assert body["usage"]["completion_tokens"] == 2
    assert body["choices"][0]["finish_reason"] == "length"


async def test_stream_events(instant: httpx.AsyncClient) -> None:
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = await instant.post("/v1/chat/completions", json=request)
    assert response.headers["content-type"] == "text/event-stream"
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    whole = (await instant.post("/v1/chat/completions", json=CHAT)).json()
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole["usage"]
    assert len(chunks) == whole["usage"]["completion_tokens"] + 3


async def test_rpm_limit_refills_on_the_clock(clock: FakeClock) -> None:
    async with connect(SimApp(SimConfig(ttft_s=0, per_token_s=0, rpm=60), clock=clock)) as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        assert first.headers["x-ratelimit-remaining-requests"] == "0"
        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "requests"
        assert refused.headers["retry-after"] == "1"
        clock.advance(1.0)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await client.get("/stats")).json()["rate_limited"] == 1


async def test_tpm_charges_prompt_plus_max_tokens(clock: FakeClock) -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, tpm=1200), clock=clock)  # holds 20
    async with connect(app) as client:
        ok = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8})
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-remaining-tokens"] == "0"  # prompt 12 + 8
        clock.advance(1.0)
        big = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 100})
        assert big.status_code == 429
        assert big.json()["error"]["type"] == "tokens"
        assert "Request too large" in big.json()["error"]["message"]
        assert (
            await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8})
        ).is_success


async def test_unknown_path_and_wrong_method(instant: httpx.AsyncClient) -> None:
    missing = await instant.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "Unknown request URL: /v2/nothing",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
    wrong = await instant.get("/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    stats = (await instant.get("/stats")).json()
    assert stats["requests"]["other"] == 1
    assert stats["responses"] == {"404": 1, "405": 1}


CHAT_PROBLEMS: list[tuple[Any, str | None]] = [
    (b"{not json", None),
    (b"[1, 2]", None),
    ({"messages": MESSAGES}, "model"),
    ({"model": "", "messages": MESSAGES}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "max_tokens": "5"}, "max_tokens"),
    ({**CHAT, "max_tokens": True}, "max_tokens"),
    ({**CHAT, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "stream_options": 1}, "stream_options"),
    ({**CHAT, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
]
EMBED_PROBLEMS: list[tuple[Any, str | None]] = [
    ({"model": "e"}, "input"),
    ({"model": "e", "input": ""}, "input"),
    ({"model": "e", "input": []}, "input"),
    ({"model": "e", "input": ["a", ""]}, "input[1]"),
    ({"model": "e", "input": [1, "a"]}, "input"),
    ({"model": "e", "input": [True]}, "input"),
    ({"model": "e", "input": [[1], []]}, "input[1]"),
    ({"model": "e", "input": [[-1]]}, "input[0]"),
    ({"model": "e", "input": ["a"] * 2049}, "input"),
    ({"model": "e", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "e", "input": "a", "dimensions": 10**6}, "dimensions"),
]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [("/v1/chat/completions", *p) for p in CHAT_PROBLEMS]
    + [("/v1/embeddings", *p) for p in EMBED_PROBLEMS],
)
async def test_bad_input_is_400_naming_the_param(
    instant: httpx.AsyncClient, path: str, body: Any, param: str | None
) -> None:
    content = body if isinstance(body, bytes) else dumps(body)
    response = await instant.post(path, content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_unknown_model_is_404_when_models_are_configured() -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, models=("gpt-4o-mini",)))
    async with connect(app) as client:
        ok = await client.post("/v1/chat/completions", json=CHAT)
        missing = await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"})
        listed = (await client.get("/v1/models")).json()
    assert ok.status_code == 200
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert [m["id"] for m in listed["data"]] == ["gpt-4o-mini"]


async def test_embeddings_accept_token_inputs_and_dimensions(instant: httpx.AsyncClient) -> None:
    one = await instant.post("/v1/embeddings", json={"model": "e", "input": [5, 6, 7]})
    assert len(one.json()["data"]) == 1
    assert one.json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    many = await instant.post(
        "/v1/embeddings", json={"model": "e", "input": [[5, 6, 7], [8]], "dimensions": 16}
    )
    data = many.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert [len(d["embedding"]) for d in data] == [16, 16]
    assert sum(x * x for x in data[0]["embedding"]) == pytest.approx(1.0, rel=1e-5)


async def test_api_key_guards_the_v1_routes() -> None:
    app = SimApp(SimConfig(ttft_s=0, per_token_s=0, api_key="sekret"))
    async with connect(app) as anonymous, connect(app, authorization="Bearer sekret") as known:
        refused = await anonymous.get("/v1/models")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert (await anonymous.get("/stats")).status_code == 200
        assert (await known.get("/v1/models")).status_code == 200
        assert (await known.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_faults_route_validates_and_applies(instant: httpx.AsyncClient) -> None:
    bad = await instant.post("/sim/faults", json={"error_rate": 2})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "error_rate"
    unknown = await instant.post("/sim/faults", json={"latency": 1})
    assert unknown.json()["error"]["param"] == "latency"
    assert (await instant.post("/sim/faults", json=[1])).status_code == 400
    ok = await instant.post("/sim/faults", json={"error_rate": 1})
    assert ok.json() == {"error_rate": 1.0, "hang_rate": 0.0, "slow_factor": 1.0}
    assert (await instant.get("/sim/faults")).json() == ok.json()
    failed = await instant.post("/v1/chat/completions", json=CHAT)
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "server_error"
    assert (await instant.get("/stats")).json()["errors_injected"] == 1


async def test_reset_zeroes_counters(instant: httpx.AsyncClient) -> None:
    await instant.post("/v1/chat/completions", json=CHAT)
    assert (await instant.post("/sim/reset")).json() == {"reset": True}
    stats = (await instant.get("/stats")).json()
    assert stats["requests"] == {"/stats": 1}
    assert stats["completion_tokens"] == 0
    assert stats["responses"] == {"200": 1}  # the reset itself


async def test_lifespan_handshake() -> None:
    app = SimApp(INSTANT)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert "in_flight=0" in repr(app)
