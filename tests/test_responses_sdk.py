"""The real openai SDK's ``client.responses`` against the real sim, through both doors.

Each test runs twice: through ``od.http_client()`` (the SDK unchanged, its
HTTP client the engine's) and through the gateway (the SDK pointed at
``gateway_url + "/v1"``). The sim counts what reached it, so a cached or
coalesced answer shows as a request the sim never saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
from openai.types.responses import ResponseFunctionToolCall

from overdrive import Overdrive
from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.monitor.names import STREAMS_NOT_STORED
from overdrive.sim import SimConfig, SimServer

MODEL = "gpt-4o-mini"
PATH = "/v1/responses"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city today.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    config = SimConfig(seed=5, ttft_s=0.01, per_token_s=0.001, jitter=0.0, models=(MODEL,))
    with SimServer(config) as server:
        yield server


def engine_config(sim: SimServer) -> dict[str, Any]:
    upstream = {"name": "sim", "base_url": sim.base_url, "models": [MODEL], "rpm": 6000}
    return {"upstreams": [upstream], "retry": {"base": "10ms"}}


@pytest.fixture(scope="module")
def gateway(sim: SimServer) -> Iterator[GatewayServer]:
    with GatewayServer(GatewayApp(engine_config(sim))) as server:
        yield server


@dataclass
class Door:
    """One way in: its name (each test's prompts carry it, so the gateway's cache,
    kept for the module, never answers one test with another's) and its client."""

    name: str
    client: openai.AsyncOpenAI
    engine: Overdrive | None  # the engine, when the test holds it (the in-process door)

    def ask(self, text: str) -> str:
        return f"[{self.name}] {text}"


@pytest.fixture(params=["http_client", "gateway"])
async def door(
    request: pytest.FixtureRequest, sim: SimServer, gateway: GatewayServer
) -> AsyncIterator[Door]:
    sim.reset()
    if request.param == "gateway":
        client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        async with client:
            yield Door("gateway", client, None)
        return
    async with Overdrive.from_config(engine_config(sim)) as od:
        client = openai.AsyncOpenAI(
            base_url="http://127.0.0.1:9/v1",  # a dead port: the engine routes by model instead
            api_key="unused",
            max_retries=0,
            http_client=od.http_client(),
        )
        async with client:
            yield Door("http_client", client, od)


@pytest.fixture
async def direct(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as client:
        yield client


def reached(sim: SimServer) -> int:
    """How many Responses calls the sim has seen since the test began."""
    return int(sim.stats()["requests"].get(PATH, 0))


async def test_a_response_through_the_door_is_the_sims(
    door: Door, direct: openai.AsyncOpenAI
) -> None:
    ask = door.ask("What is the capital of France?")
    routed = await door.client.responses.create(model=MODEL, input=ask, instructions="Be terse.")
    plain = await direct.responses.create(model=MODEL, input=ask, instructions="Be terse.")
    assert routed.status == "completed"
    assert routed.output_text == plain.output_text
    assert routed.output_text
    assert routed.usage is not None
    assert routed.usage.output_tokens == len(routed.output_text.split())


async def test_a_streamed_response_arrives_as_events(
    door: Door, direct: openai.AsyncOpenAI
) -> None:
    ask = door.ask("Stream me an answer.")
    stream = await door.client.responses.create(model=MODEL, input=ask, stream=True)
    kinds, deltas = [], []
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert len(deltas) > 3
    whole = await direct.responses.create(model=MODEL, input=ask)
    assert "".join(deltas) == whole.output_text


async def test_the_sdks_stream_helper_gets_the_final_response(door: Door) -> None:
    ask = door.ask("Stream me through the helper.")
    async with door.client.responses.stream(model=MODEL, input=ask) as stream:
        texts = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert final.status == "completed"
    assert "".join(texts) == final.output_text


async def test_a_repeat_is_answered_from_the_cache(door: Door, sim: SimServer) -> None:
    ask = door.ask("Cache this answer, please.")
    raw = door.client.responses.with_raw_response
    first = await raw.create(model=MODEL, input=ask, max_output_tokens=64)
    second = await raw.create(model=MODEL, input=ask, max_output_tokens=64)
    assert first.headers["x-overdrive-cache"] == "MISS"
    assert second.headers["x-overdrive-cache"] == "HIT"
    assert second.headers["x-overdrive-upstream"] == "sim"
    assert first.parse().output_text == second.parse().output_text
    assert first.parse().id == second.parse().id
    assert reached(sim) == 1


async def test_a_repeated_stream_is_replayed_from_the_cache(door: Door, sim: SimServer) -> None:
    ask = door.ask("Cache this stream, please.")

    async def texts() -> tuple[str, str]:
        raw = await door.client.responses.with_raw_response.create(
            model=MODEL, input=ask, stream=True
        )
        stream = raw.parse()
        parts = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        return raw.headers["x-overdrive-cache"], "".join(parts)

    first, second = await texts(), await texts()
    assert (first[0], second[0]) == ("MISS", "HIT")
    assert first[1] == second[1]
    assert first[1]
    assert reached(sim) == 1


async def test_identical_concurrent_calls_reach_the_sim_once(door: Door, sim: SimServer) -> None:
    ask = door.ask("One question, asked ten times at once.")
    answers = await asyncio.gather(
        *(door.client.responses.create(model=MODEL, input=ask) for _ in range(10))
    )
    assert len({answer.output_text for answer in answers}) == 1
    assert reached(sim) == 1


async def test_identical_concurrent_streams_share_one_upstream_stream(
    door: Door, sim: SimServer
) -> None:
    ask = door.ask("One stream, read five times at once.")

    async def read() -> str:
        stream = await door.client.responses.create(model=MODEL, input=ask, stream=True)
        return "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])

    texts = await asyncio.gather(*(read() for _ in range(5)))
    assert len(set(texts)) == 1
    assert reached(sim) == 1


async def test_a_function_tool_round_trip(door: Door, sim: SimServer) -> None:
    ask = door.ask("What does get_weather say about Oslo?")
    asked = await door.client.responses.create(model=MODEL, input=ask, tools=[WEATHER])
    (call,) = asked.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather"
    assert set(openai_json(call.arguments)) == {"city"}
    follow_up: Any = [
        {"role": "user", "content": ask},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 °C"},
    ]
    answered = await door.client.responses.create(model=MODEL, input=follow_up, tools=[WEATHER])
    assert answered.output[0].type == "message"
    assert answered.output_text
    assert reached(sim) == 2


async def test_a_streamed_function_call_carries_its_arguments(door: Door) -> None:
    ask = door.ask("Stream a call of get_weather.")
    async with door.client.responses.stream(model=MODEL, input=ask, tools=[WEATHER]) as stream:
        deltas = [
            e.delta async for e in stream if e.type == "response.function_call_arguments.delta"
        ]
        final = await stream.get_final_response()
    (call,) = final.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert "".join(deltas) == call.arguments
    assert set(openai_json(call.arguments)) == {"city"}


async def test_calls_in_a_conversation_are_never_shared(door: Door, sim: SimServer) -> None:
    ask = door.ask("A turn of a stored conversation.")
    raw = door.client.responses.with_raw_response
    first = await raw.create(model=MODEL, input=ask, conversation="conv_1", temperature=0)
    second = await raw.create(model=MODEL, input=ask, conversation="conv_1", temperature=0)
    assert [first.headers["x-overdrive-cache"], second.headers["x-overdrive-cache"]] == [
        "MISS",
        "MISS",
    ]
    together = await asyncio.gather(
        *(door.client.responses.create(model=MODEL, input=ask, background=True) for _ in range(3))
    )
    assert len(together) == 3
    assert reached(sim) == 5  # each went upstream: the conversation grows with every call


async def test_a_stream_that_never_completes_is_not_stored(door: Door, sim: SimServer) -> None:
    ask = door.ask("A stream cut short by its budget.")

    async def last_event() -> str:
        stream = await door.client.responses.create(
            model=MODEL, input=ask, stream=True, max_output_tokens=3
        )
        return [event.type async for event in stream][-1]

    assert await last_event() == "response.incomplete"
    assert await last_event() == "response.incomplete"
    assert reached(sim) == 2  # the first was not kept, so the second went upstream too
    if door.engine is not None:
        assert door.engine.metrics.value(STREAMS_NOT_STORED) == 2


async def test_a_stream_the_upstream_breaks_off_is_not_stored() -> None:
    # A sim of its own: it is shut down in the middle of the answer.
    config = SimConfig(seed=6, ttft_s=0.0, per_token_s=0.05, jitter=0.0, models=(MODEL,))
    with SimServer(config) as sim:
        async with Overdrive.from_config(engine_config(sim)) as od:
            client = openai.AsyncOpenAI(
                base_url="http://127.0.0.1:9/v1", api_key="unused", http_client=od.http_client()
            )
            stream = await client.responses.create(model=MODEL, input="cut me", stream=True)
            kinds = []
            async for event in stream:
                kinds.append(event.type)
                if event.type == "response.output_text.delta" and len(kinds) == 5:
                    await asyncio.to_thread(sim.stop)  # its app ends every open stream first
            assert "response.completed" not in kinds
            assert kinds[-1] == "error"
            assert od.metrics.value(STREAMS_NOT_STORED) == 1


# -- the OpenAI Agents SDK on Responses, through od.http_client() ---------------------

# No traces sent anywhere: the run stays on this machine.
QUIET = RunConfig(tracing_disabled=True)


def weather_agent(client: openai.AsyncOpenAI, asked: list[str]) -> Agent[None]:
    """An agent with one function tool, which notes each city it is asked about."""

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city today."""
        asked.append(city)
        return f"Sunny in {city}, 21 °C."

    model = OpenAIResponsesModel(model=MODEL, openai_client=client)
    return Agent(
        name="forecaster", instructions="Answer briefly.", tools=[get_weather], model=model
    )


@pytest.fixture
async def agent_client(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sim.reset()
    async with Overdrive.from_config(engine_config(sim)) as od:
        client = openai.AsyncOpenAI(
            base_url="http://127.0.0.1:9/v1", api_key="unused", http_client=od.http_client()
        )
        async with client:
            yield client


async def test_an_agent_runs_its_tool_loop_through_overdrive(
    agent_client: openai.AsyncOpenAI, sim: SimServer
) -> None:
    asked: list[str] = []
    agent = weather_agent(agent_client, asked)
    result = await Runner.run(agent, "Use get_weather for Oslo, please.", run_config=QUIET)
    assert len(asked) == 1  # the model asked for the tool once; its result got text back
    assert isinstance(result.final_output, str)
    assert result.final_output
    assert reached(sim) == 2  # the tool call, then the answer
    again = await Runner.run(agent, "Use get_weather for Oslo, please.", run_config=QUIET)
    assert again.final_output == result.final_output
    assert asked == [asked[0], asked[0]]  # the tool runs again: it is the agent's own code
    assert reached(sim) == 2  # both model calls answered from the cache


async def test_a_streamed_agent_run_through_overdrive(
    agent_client: openai.AsyncOpenAI, sim: SimServer
) -> None:
    asked: list[str] = []
    agent = weather_agent(agent_client, asked)
    run = Runner.run_streamed(agent, "Use get_weather for Bergen.", run_config=QUIET)
    kinds = {event.type async for event in run.stream_events()}
    assert "raw_response_event" in kinds
    assert len(asked) == 1
    assert isinstance(run.final_output, str)
    assert run.final_output
    assert reached(sim) == 2


def openai_json(arguments: str) -> dict[str, Any]:
    value = json.loads(arguments)
    assert isinstance(value, dict)
    return value
