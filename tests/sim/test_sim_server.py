"""The simulated upstream on a real loopback socket, driven by httpx and the openai client."""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overdrive._json import dumps
from overdrive.sim import SimConfig, SimServer

INSTANT = SimConfig(ttft_s=0.0, per_token_s=0.0, embed_base_s=0.0, embed_per_item_s=0.0)
MESSAGES: list[Any] = [{"role": "user", "content": "Name three rivers."}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    """One zero-latency server for the tests that only read answers."""
    with SimServer(INSTANT) as server:
        yield server


def sync_client(server: SimServer, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sim", max_retries=0, **options)


def async_client(server: SimServer, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sim", max_retries=0, **options)


def eventually(condition: Callable[[], bool]) -> None:
    """Wait (briefly, in small steps) for the server thread to catch up."""
    for _ in range(200):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition never held")


def test_server_binds_a_free_port_and_stops_cleanly() -> None:
    before = threading.active_count()
    server = SimServer(INSTANT).start()
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert "running" in repr(server)
    assert httpx.get(server.url + "/stats").status_code == 200
    server.stop()
    server.stop()
    assert threading.active_count() == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/stats")


def test_chat_with_the_sync_openai_client(sim: SimServer) -> None:
    with sync_client(sim) as client:
        first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        other = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Name two lakes."}]
        )
    content = first.choices[0].message.content
    assert content
    assert first.usage is not None
    assert first.usage.completion_tokens == len(content.split())
    assert again.choices[0].message.content == content
    assert again.id == first.id
    assert other.choices[0].message.content != content


async def test_chat_with_the_async_openai_client(sim: SimServer) -> None:
    async with async_client(sim) as client:
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}]
                )
                for i in range(20)
            )
        )
    assert len({a.choices[0].message.content for a in answers}) == 20


async def test_stream_arrives_over_time() -> None:
    config = SimConfig(ttft_s=0.05, per_token_s=0.02, jitter=0.0)
    with SimServer(config) as server:
        async with async_client(server) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=10,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = []
            in_flight_at_first_word = None
            async for chunk in stream:
                chunks.append(chunk)
                if (
                    in_flight_at_first_word is None
                    and chunk.choices
                    and chunk.choices[0].delta.content
                ):
                    in_flight_at_first_word = server.stats()["in_flight"]
        stats = server.stats()
    # The first word reached us while the server was still producing the rest.
    assert in_flight_at_first_word == 1
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(words) == 10
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10
    assert stats["completion_tokens"] == 10
    assert stats["in_flight"] == 0


def test_embeddings_float_and_base64_agree(sim: SimServer) -> None:
    texts = ["the cat sat", "on the mat", "the cat sat"]
    with sync_client(sim) as client:
        default = client.embeddings.create(model="text-embedding-3-small", input=texts)
        floats = client.embeddings.create(
            model="text-embedding-3-small", input=texts, encoding_format="float"
        )
        small = client.embeddings.create(model="e", input="the cat sat", dimensions=32)
    vectors = [d.embedding for d in default.data]
    assert vectors == [d.embedding for d in floats.data]
    assert len(vectors[0]) == 256
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert sum(x * x for x in vectors[1]) == pytest.approx(1.0, rel=1e-5)
    assert len(small.data[0].embedding) == 32
    assert default.usage.prompt_tokens == default.usage.total_tokens == 9


def test_embeddings_base64_wire_format(sim: SimServer) -> None:
    body = {"model": "e", "input": ["a"], "encoding_format": "base64", "dimensions": 4}
    raw = httpx.post(sim.base_url + "/embeddings", json=body).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert len(packed) == 16
    body["encoding_format"] = "float"
    floats = httpx.post(sim.base_url + "/embeddings", json=body).json()
    assert list(struct.unpack("<4f", packed)) == floats["data"][0]["embedding"]


def test_models_list(sim: SimServer) -> None:
    with sync_client(sim) as client:
        models = client.models.list()
    assert "gpt-4o-mini" in [m.id for m in models.data]
    assert all(m.owned_by == "overdrive-sim" for m in models.data)


def test_stats_count_what_was_served() -> None:
    with SimServer(INSTANT) as server, sync_client(server) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
        client.embeddings.create(model="e", input=["a", "b"])
        httpx.get(server.url + "/nowhere")
        stats = server.stats()
        over_http = httpx.get(server.url + "/stats").json()
        assert over_http["requests"].pop("/stats") == 1  # it counts itself
        assert over_http == stats
        assert answer.usage is not None
        assert stats["requests"] == {"/v1/chat/completions": 1, "/v1/embeddings": 1, "other": 1}
        assert stats["responses"] == {"200": 2, "404": 1}
        assert stats["completion_tokens"] == answer.usage.completion_tokens
        assert stats["prompt_tokens"] == answer.usage.prompt_tokens + 2
        assert stats["embedding_inputs"] == 2
        assert stats["max_in_flight"] == 1
        server.reset()
        assert server.stats()["requests"] == {}


def test_rate_limited_with_openai_headers() -> None:
    with SimServer(SimConfig(ttft_s=0, per_token_s=0, rpm=1, tpm=100_000)) as server:
        with sync_client(server) as client:
            ok = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="m", messages=MESSAGES)
        assert ok.headers["x-ratelimit-limit-requests"] == "1"
        assert ok.headers["x-ratelimit-remaining-requests"] == "0"
        headers = refused.value.response.headers
        assert 55 <= int(headers["retry-after"]) <= 60
        assert int(headers["retry-after-ms"]) > 55_000
        assert headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(headers["x-ratelimit-remaining-tokens"]) > 0
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert refused.value.code == "rate_limit_exceeded"
        assert server.stats()["rate_limited"] == 1
        server.reset()  # refills the buckets
        with sync_client(server) as client:
            assert client.chat.completions.create(model="m", messages=MESSAGES).choices


def test_api_key_is_required_when_set() -> None:
    with SimServer(replace(INSTANT, api_key="sekret")) as server:
        with sync_client(server) as client, pytest.raises(openai.AuthenticationError) as refused:
            client.models.list()
        assert refused.value.code == "invalid_api_key"
        with openai.OpenAI(base_url=server.base_url, api_key="sekret") as client:
            assert client.models.list().data


def test_error_rate_one_fails_every_call(sim: SimServer) -> None:
    sim.set_faults(error_rate=1.0)
    try:
        with sync_client(sim) as client, pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="m", messages=MESSAGES)
    finally:
        sim.set_faults(error_rate=0.0)
    assert failed.value.status_code == 500
    assert sim.stats()["errors_injected"] >= 1
    with pytest.raises(ValueError, match="error_rate"):
        sim.set_faults(error_rate=-1.0)


async def test_hang_times_out_without_blocking_others() -> None:
    with SimServer(replace(INSTANT, hang_rate=1.0)) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            body = {"model": "m", "messages": MESSAGES}
            hung = asyncio.create_task(client.post("/chat/completions", json=body, timeout=0.3))
            for _ in range(100):  # until the server holds it
                await asyncio.sleep(0.01)
                if server.stats()["hung"]:
                    break
            server.set_faults(hang_rate=0.0)
            answered = await client.post("/chat/completions", json=body)
            assert answered.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                await hung
        eventually(lambda: server.stats()["in_flight"] == 0)


def test_junk_bodies_get_4xx_and_the_server_keeps_answering(sim: SimServer) -> None:
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
    fields = st.sampled_from(
        ["model", "messages", "max_tokens", "stream", "stream_options", "input", "dimensions"]
    )
    shaped = st.dictionaries(fields, json_values, max_size=5)
    paths = st.sampled_from(["/chat/completions", "/embeddings"])

    with httpx.Client(base_url=sim.base_url) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(paths, st.binary(max_size=200) | shaped.map(dumps))
        def check(path: str, content: bytes) -> None:
            response = client.post(path, content=content)
            assert response.status_code < 500
            if response.status_code >= 400:
                assert response.json()["error"]["message"]

        check()
        assert client.get("/models").status_code == 200


def test_body_too_big_is_413() -> None:
    with SimServer(replace(INSTANT, max_body_bytes=1024)) as server:
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
        declared = httpx.post(server.base_url + "/chat/completions", json=big)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no content-length: the read itself must stop
            yield b'{"model": "m", "messages": ['
            yield b" " * 2000
            yield b"]}"

        streamed = httpx.post(server.base_url + "/chat/completions", content=chunks())
        assert streamed.status_code == 413


def test_disconnect_mid_stream_leaves_nothing_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.02, jitter=0.0)) as server:
        body = {"model": "m", "messages": MESSAGES, "stream": True}
        with (
            httpx.Client(base_url=server.base_url) as client,
            client.stream("POST", "/chat/completions", json=body) as response,
        ):
            lines = response.iter_lines()  # held: dropping it would close the response
            assert next(lines).startswith("data: ")
            assert server.stats()["in_flight"] == 1
        eventually(lambda: server.stats()["in_flight"] == 0)
        assert server.stats()["completion_tokens"] == 0  # the stream never finished
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_run_sim_serves_in_the_foreground_until_interrupted() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        f"from overdrive.sim import SimConfig, run_sim; run_sim(SimConfig(ttft_s=0), port={port})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        eventually(lambda: _answers(f"http://127.0.0.1:{port}/v1/models"))
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert f"127.0.0.1:{port}".encode() in output  # uvicorn said where it listens


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.ConnectError:
        return False


async def test_stop_ends_hung_calls_and_open_streams(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server = SimServer(SimConfig(ttft_s=0.0, per_token_s=0.05, jitter=0.0)).start()
    body = {"model": "m", "messages": MESSAGES}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        stream = asyncio.create_task(client.post("/chat/completions", json=body | {"stream": True}))
        for _ in range(100):  # until the stream is under way
            await asyncio.sleep(0.01)
            if server.stats()["in_flight"]:
                break
        server.set_faults(hang_rate=1.0)
        hung = asyncio.create_task(client.post("/chat/completions", json=body))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if server.stats()["hung"]:
                break
        await asyncio.to_thread(server.stop)
        assert (await hung).status_code == 503
        cut = await stream
    assert cut.status_code == 200
    assert cut.text.startswith("data: ")
    assert "[DONE]" not in cut.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
