"""Agent frameworks on the Responses API, end to end: pydantic-ai and LangChain on the real sim.

Each test runs through both doors: ``od.http_client()`` handed to the
framework's OpenAI client (an httpx2 client: both frameworks take it as it
is, no ``flavour="httpx"`` needed), and the gateway (the framework pointed at
``gateway_url + "/v1"`` with a plain httpx2 client). The sim counts what reached
it, so an answer from the cache or a call merged into one in flight shows as
a request the sim never saw.

Nothing here may reach the internet: every connection to a host off the
loopback fails the test (so a tiktoken encoding or a telemetry upload could
not hide), and LangChain's tracing is off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr
from pydantic_ai import Agent
from pydantic_ai.messages import ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from overdrive import Overdrive
from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

MODEL = "gpt-4o-mini"
PATH = "/v1/responses"
NOWHERE = "http://127.0.0.1:9/v1"  # a dead port: the engine routes by model instead


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection off this machine, and keep LangChain from tracing."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                raise AssertionError(f"a test tried to reach {address!r}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    # Slow enough to the first token that identical calls made at once overlap upstream.
    config = SimConfig(seed=9, ttft_s=0.05, per_token_s=0.001, jitter=0.0, models=(MODEL,))
    with SimServer(config) as server:
        yield server


def engine_config(sim: SimServer) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [MODEL], "rpm": 6000}
    return {"upstreams": [upstream], "retry": {"base": "10ms"}}


@pytest.fixture(scope="module")
def gateway(sim: SimServer) -> Iterator[GatewayServer]:
    with GatewayServer(GatewayApp(engine_config(sim))) as server:
        yield server


def reached(sim: SimServer) -> int:
    """How many Responses calls the sim has seen since the test began."""
    return int(sim.stats()["requests"].get(PATH, 0))


@dataclass
class Door:
    """One way in. Prompts carry its name, so the gateway's cache (kept for the
    module) never answers one test with another's."""

    name: str
    base_url: str
    http: httpx2.AsyncClient | None = None
    sync_http: httpx2.Client | None = None

    def ask(self, text: str) -> str:
        return f"[{self.name}] {text}"

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key="unused", max_retries=0, http_client=self.http
        )

    def langchain(self) -> ChatOpenAI:
        return ChatOpenAI(
            model=MODEL,
            use_responses_api=True,
            base_url=self.base_url,
            api_key=SecretStr("unused"),
            max_retries=0,
            http_async_client=self.http,
            http_client=self.sync_http,
            include_response_headers=True,  # to read x-overdrive-cache
        )


@pytest.fixture(params=["http_client", "gateway"])
async def door(
    request: pytest.FixtureRequest, sim: SimServer, gateway: GatewayServer
) -> AsyncIterator[Door]:
    sim.reset()
    if request.param == "gateway":
        # A plain httpx2 client, as the SDK would make, but one the test closes.
        async with httpx2.AsyncClient() as plain:
            yield Door("gateway", gateway.base_url, plain)
        return
    async with Overdrive.from_config(engine_config(sim)) as od, od.http_client() as http:
        yield Door("http_client", NOWHERE, http)


@pytest.fixture(params=["http_client", "gateway"])
def sync_door(
    request: pytest.FixtureRequest, sim: SimServer, gateway: GatewayServer
) -> Iterator[Door]:
    """A door for code with no event loop: the engine runs its own, on a thread."""
    sim.reset()
    if request.param == "gateway":
        with httpx2.Client() as plain:
            yield Door("gateway sync", gateway.base_url, sync_http=plain)
        return
    od = Overdrive.from_config(engine_config(sim))
    try:
        with od.http_client(sync=True) as http:
            yield Door("http_client sync", NOWHERE, sync_http=http)
    finally:
        od.close()


# -- pydantic-ai ----------------------------------------------------------------------


def weather_agent(door: Door, cities: list[str]) -> Agent[None, str]:
    """A pydantic-ai agent on the Responses API with one function tool, which logs its calls."""
    model = OpenAIResponsesModel(MODEL, provider=OpenAIProvider(openai_client=door.openai()))
    agent = Agent(model, instructions="Answer in one sentence.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Today's weather in a city."""
        cities.append(city)
        return f"Sunny in {city}, 21 °C"

    return agent


async def test_pydantic_ai_runs_a_tool_loop_and_repeats_from_the_cache(
    door: Door, sim: SimServer
) -> None:
    cities: list[str] = []
    agent = weather_agent(door, cities)
    ask = door.ask("What does get_weather say about Oslo?")
    first = await agent.run(ask)
    parts = [part for message in first.all_messages() for part in message.parts]
    (call,) = [part for part in parts if isinstance(part, ToolCallPart)]
    (returned,) = [part for part in parts if isinstance(part, ToolReturnPart)]
    assert call.tool_name == "get_weather"
    assert returned.content == f"Sunny in {cities[0]}, 21 °C"
    assert first.output
    assert reached(sim) == 2  # the tool call, then the answer to its result
    again = await agent.run(ask)
    assert again.output == first.output
    assert cities == [cities[0]] * 2  # the tool is the agent's own: it runs again
    assert reached(sim) == 2  # both model calls came from the cache


async def test_pydantic_ai_identical_concurrent_runs_are_coalesced(
    door: Door, sim: SimServer
) -> None:
    cities: list[str] = []
    agent = weather_agent(door, cities)
    ask = door.ask("Five agents ask get_weather about Bergen at once.")
    results = await asyncio.gather(*(agent.run(ask) for _ in range(5)))
    assert len({result.output for result in results}) == 1
    assert len(cities) == 5
    assert reached(sim) == 2  # each step went upstream once for all five


# -- LangChain ------------------------------------------------------------------------


def cache_header(message: Any) -> str:
    return str(message.response_metadata["headers"]["x-overdrive-cache"])


async def test_langchain_ainvoke_repeats_from_the_cache(door: Door, sim: SimServer) -> None:
    llm = door.langchain()
    ask = door.ask("Name three harbour birds.")
    first = await llm.ainvoke(ask)
    second = await llm.ainvoke(ask)
    assert [cache_header(first), cache_header(second)] == ["MISS", "HIT"]
    assert first.text
    assert second.text == first.text
    assert first.response_metadata["model_name"] == MODEL
    assert reached(sim) == 1


async def test_langchain_identical_concurrent_ainvokes_are_coalesced(
    door: Door, sim: SimServer
) -> None:
    llm = door.langchain()
    ask = door.ask("Six chains ask this at once.")
    messages = await asyncio.gather(*(llm.ainvoke(ask) for _ in range(6)))
    assert len({message.text for message in messages}) == 1
    assert reached(sim) == 1


def test_langchain_sync_invoke_caches_and_coalesces(sync_door: Door, sim: SimServer) -> None:
    llm = sync_door.langchain()
    ask = sync_door.ask("A synchronous chain.")
    first, second = llm.invoke(ask), llm.invoke(ask)
    assert [cache_header(first), cache_header(second)] == ["MISS", "HIT"]
    assert first.text
    assert second.text == first.text
    together = sync_door.ask("Four threads ask this at once.")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = {message.text for message in pool.map(llm.invoke, [together] * 4)}
    assert len(texts) == 1
    assert reached(sim) == 2  # one for each distinct prompt
