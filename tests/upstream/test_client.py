"""Each upstream client through the one base, on a real socket; and which one an endpoint gets.

Both clients answer the same questions the same way: a whole answer comes
back read, a stream before its body ends, a probe with True below 500, and
an answer over its bounds as :class:`~overdrive.UpstreamProtocolError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from overdrive import UpstreamProtocolError
from overdrive._calls import chat_call
from overdrive.config import UpstreamConfig
from overdrive.testing import FakeClock
from overdrive.upstream import Upstream
from overdrive.upstream._client import AnswerBounds, UpstreamClient, read_within
from overdrive.upstream._httpx_client import HttpxClient
from overdrive.upstream._httpx_guard import guarded_transport
from overdrive.upstream._wire import WireClient, wire_client_for
from tests.fakes import FakeServer, chat_response, refusing_url

BOUNDS = AnswerBounds("bounded", head_bytes=4096, body_bytes=16 * 1024)
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
EVENTS = [b'data: {"n": %d}\n\n' % n for n in range(3)] + [b"data: [DONE]\n\n"]
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the test's environment would take the lean client off."""
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def httpx_client(url: str) -> HttpxClient:
    limits = httpx.Limits(max_connections=4)
    transport = guarded_transport(limits)
    return HttpxClient(url, bounds=BOUNDS, timeout=5.0, limits=limits, transport=transport)


def wire_client(url: str) -> WireClient:
    options: dict[str, Any] = {"connections": 4, "timeout": 5.0, "connect_timeout": 5.0}
    client = wire_client_for(url, httpx_client(url), api_key="k", bounds=BOUNDS, **options)
    assert client is not None
    return client


CLIENTS: dict[str, Callable[[str], UpstreamClient]] = {"wire": wire_client, "httpx": httpx_client}


@pytest.fixture(params=sorted(CLIENTS))
def make(request: pytest.FixtureRequest) -> Callable[[str], UpstreamClient]:
    """Makes the client under test for a base URL (the test closes it)."""
    return CLIENTS[request.param]


class Gated(httpx.AsyncByteStream):
    """The events as a chunked body, the rest held back until ``gate`` opens."""

    def __init__(self, gate: asyncio.Event) -> None:
        self._gate = gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield EVENTS[0]
        await self._gate.wait()
        for event in EVENTS[1:]:
            yield event


def json_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=chat_response("m"), headers={"x-ratelimit-remaining": "7"})


# --- whole answers -----------------------------------------------------------------------


async def test_a_whole_answer_comes_back_read(make: Callable[[str], UpstreamClient]) -> None:
    async with FakeServer(json_answer) as server:
        client = make(server.url)
        for _ in range(3):
            response = await client.post("/chat/completions", CHAT)
            assert response.status_code == 200
            assert response.headers["X-RateLimit-Remaining"] == "7"  # any case, as httpx's
            assert response.content == httpx.Response(200, json=chat_response("m")).content
            assert await response.aread() == response.content
            await response.aclose()
        await client.aclose()
    assert server.connections == 1  # kept alive between the calls
    request = server.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/chat/completions")
    assert request.headers["content-type"] == "application/json"
    assert request.content == CHAT


async def test_a_failed_connect_is_httpxs_error(make: Callable[[str], UpstreamClient]) -> None:
    with refusing_url() as url:
        client = make(url)
        with pytest.raises(httpx.ConnectError):  # what the dispatcher retries, either way
            await client.post("/chat/completions", CHAT)
        await client.aclose()


# --- streams -----------------------------------------------------------------------------


async def test_a_stream_comes_back_before_its_body_ends(
    make: Callable[[str], UpstreamClient],
) -> None:
    gate = asyncio.Event()
    async with FakeServer(lambda request: httpx.Response(200, stream=Gated(gate))) as server:
        client = make(server.url)
        response = await client.stream("/chat/completions", CHAT)
        assert response.status_code == 200
        chunks = aiter(response.aiter_bytes())
        assert await anext(chunks) == EVENTS[0]  # while the rest is held back
        gate.set()
        assert b"".join([chunk async for chunk in chunks]) == b"".join(EVENTS[1:])
        await response.aclose()
        await client.aclose()
    assert server.requests[0].content == CHAT


# --- probes ------------------------------------------------------------------------------


async def test_a_probe_is_up_below_500(make: Callable[[str], UpstreamClient]) -> None:
    statuses = iter([200, 404, 503])
    async with FakeServer(lambda request: httpx.Response(next(statuses), json={})) as server:
        client = make(server.url)
        assert [await client.probe("/models", 1.0) for _ in range(3)] == [True, True, False]
        await client.aclose()
    assert [(r.method, r.url.path) for r in server.requests] == [("GET", "/v1/models")] * 3


async def test_a_probe_unanswered_in_time_or_refused_is_down(
    make: Callable[[str], UpstreamClient],
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # cancelled as the probe gives up and closes
        raise AssertionError("never answered")

    async with FakeServer(never) as server:
        client = make(server.url)
        assert await client.probe("/models", 0.05) is False
        await client.aclose()
    with refusing_url() as url:
        client = make(url)
        assert await client.probe("/models", 1.0) is False
        await client.aclose()


# --- bounds ------------------------------------------------------------------------------


def oversize(what: str) -> httpx.Response:
    if what == "head":
        return httpx.Response(200, json={}, headers={"x-big": "h" * BOUNDS.head_bytes})
    return httpx.Response(200, content=b"b" * (BOUNDS.body_bytes + 1))


@pytest.mark.parametrize(
    ("what", "bound"), [("head", "max_response_head_bytes"), ("body", "max_response_bytes")]
)
async def test_a_whole_answer_over_a_bound_is_refused(
    make: Callable[[str], UpstreamClient], what: str, bound: str
) -> None:
    answers = iter([lambda request: oversize(what), json_answer])
    async with FakeServer(lambda request: next(answers)(request)) as server:
        client = make(server.url)
        with pytest.raises(UpstreamProtocolError, match=bound) as refusal:
            await client.post("/chat/completions", CHAT)
        assert refusal.value.upstream == "bounded"
        assert (await client.post("/chat/completions", CHAT)).status_code == 200
        await client.aclose()
    assert server.connections == 2  # the refused answer's connection was not used again


async def test_a_streamed_head_over_the_bound_is_refused(
    make: Callable[[str], UpstreamClient],
) -> None:
    async with FakeServer(lambda request: oversize("head")) as server:
        client = make(server.url)
        with pytest.raises(UpstreamProtocolError, match="max_response_head_bytes"):
            await client.stream("/chat/completions", CHAT)
        await client.aclose()


async def test_a_streamed_body_is_read_within_the_bounds(
    make: Callable[[str], UpstreamClient],
) -> None:
    async with FakeServer(lambda request: oversize("body")) as server:
        client = make(server.url)
        response = await client.stream("/chat/completions", CHAT)
        with pytest.raises(UpstreamProtocolError, match="max_response_bytes"):
            await read_within(response, BOUNDS)
        await response.aclose()
        await client.aclose()


async def test_a_closed_client_sends_nothing(make: Callable[[str], UpstreamClient]) -> None:
    async with FakeServer(json_answer) as server:
        client = make(server.url)
        await client.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await client.post("/chat/completions", CHAT)
        with pytest.raises(RuntimeError, match="closed"):  # the wire's httpx closed with it
            await client.stream("/chat/completions", CHAT)
    assert server.requests == []


# --- which client an endpoint gets -------------------------------------------------------


def upstream(base_url: str) -> Upstream:
    settings = UpstreamConfig.model_validate({"name": "u", "base_url": base_url, "models": ["m"]})
    return Upstream(settings, FakeClock())


def chat(*, stream: bool) -> Any:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return chat_call({**body, "stream": True} if stream else body)


async def test_the_lean_client_sends_whole_calls_and_httpx_streams_and_probes() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200)
        if b'"stream"' in request.content:
            return httpx.Response(200, stream=Gated(opened))
        return json_answer(request)

    opened = asyncio.Event()
    opened.set()
    async with FakeServer(answer) as server:
        endpoint = upstream(server.url)
        assert isinstance(endpoint._client, WireClient)
        assert endpoint._wire is endpoint._client
        whole = await endpoint.exchange(chat(stream=False), stream=False)
        assert whole.content == httpx.Response(200, json=chat_response("m")).content
        streamed = await endpoint.exchange(chat(stream=True), stream=True)
        assert await read_within(streamed, endpoint.bounds) == b"".join(EVENTS)
        await streamed.aclose()
        assert await endpoint.probe("/models", 1.0)
        await endpoint.aclose()
    agents = [request.headers["user-agent"] for request in server.requests]
    assert agents[0] == "overdrive"  # the lean client's
    assert all(agent.startswith("python-httpx/") for agent in agents[1:])


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/v1?api-version=1", "http://user:pw@127.0.0.1/v1"]
)
async def test_base_urls_the_lean_client_leaves_to_httpx(url: str) -> None:
    endpoint = upstream(url)
    assert isinstance(endpoint._client, HttpxClient)
    await endpoint.aclose()


@pytest.mark.parametrize("name", ["HTTP_PROXY", "https_proxy", "ALL_PROXY"])
async def test_a_proxy_in_the_environment_leaves_it_to_httpx(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = upstream("http://127.0.0.1/v1")
    assert isinstance(direct._client, WireClient)
    await direct.aclose()
    monkeypatch.setenv(name, "http://proxy.invalid:3128")
    proxied = upstream("http://127.0.0.1/v1")
    assert isinstance(proxied._client, HttpxClient)
    await proxied.aclose()
