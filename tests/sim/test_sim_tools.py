"""The sim's tool calls: which tool it picks, arguments that fit the schema, chat's tool_calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive.sim import SimApp, SimConfig
from overdrive.sim._tools import ToolSpec, pick_tool, text_of, tool_arguments

INSTANT = SimConfig(ttft_s=0.0, per_token_s=0.0)
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
        "note": {"type": "string"},
    },
    "required": ["city", "unit", "days", "hourly"],
    "additionalProperties": False,
}
WEATHER = ToolSpec("get_weather", WEATHER_SCHEMA)
SEARCH = ToolSpec("search", {})
DIGEST = bytes(range(7, 71))


# -- pick_tool -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "prompt", "answered", "picked"),
    [
        (None, "Use get_weather for Oslo.", False, "get_weather"),
        (None, "Use GET_WEATHER for Oslo.", False, "get_weather"),  # any case
        (None, "Use get_weather for Oslo.", True, None),  # its result came back: text
        (None, "What is the weather in Oslo?", False, None),  # not named: text
        (None, "get_weathers are not get_weather_now", False, None),  # whole names only
        (None, "search, then get_weather", False, "search"),  # the one named first
        ("none", "Use get_weather.", False, None),
        ("required", "no tool named here", True, "get_weather"),  # the first offered
        ("required", "please search", False, "search"),  # the one the prompt names
        ("any", "please search", True, "search"),  # Anthropic's word for it
        ("search", "Use get_weather.", True, "search"),  # a forced name wins
        ("lookup", "Use lookup.", False, None),  # not offered: nothing to call
    ],
)
def test_pick_tool(choice: str | None, prompt: str, answered: bool, picked: str | None) -> None:
    tool = pick_tool([WEATHER, SEARCH], choice, prompt, answered)
    assert (tool.name if tool is not None else None) == picked


def test_no_tools_offered_means_text() -> None:
    assert pick_tool([], "required", "get_weather", answered=False) is None


def test_text_of_joins_the_text_parts() -> None:
    parts = [{"type": "input_text", "text": "use"}, {"type": "input_image"}, {"text": "search"}]
    assert text_of(parts) == "use search"
    assert text_of("plain") == "plain"
    assert text_of(None) == ""


# -- tool_arguments --------------------------------------------------------------------


def test_arguments_fit_the_schema_and_keep_to_the_required_properties() -> None:
    arguments = tool_arguments(WEATHER, DIGEST)
    jsonschema.validate(arguments, WEATHER_SCHEMA)
    assert set(arguments) == {"city", "unit", "days", "hourly"}
    assert arguments["unit"] == "celsius"  # an enum gives its first value


def test_the_same_digest_gives_the_same_arguments_and_another_gives_others() -> None:
    assert tool_arguments(WEATHER, DIGEST) == tool_arguments(WEATHER, DIGEST)
    others = {json.dumps(tool_arguments(WEATHER, bytes([i]) * 64)) for i in range(16)}
    assert len(others) > 8


def test_a_pydantic_schema_with_refs_is_followed() -> None:
    schema = {
        "$defs": {
            "Place": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "kind": {"const": "city"}},
                "required": ["name", "kind"],
            },
        },
        "type": "object",
        "properties": {
            "place": {"$ref": "#/$defs/Place"},
            "stops": {"type": "array", "items": {"$ref": "#/$defs/Place"}, "minItems": 2},
            "limit": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0.5}]},
        },
        "required": ["place", "stops", "limit"],
    }
    arguments = tool_arguments(ToolSpec("plan", schema), DIGEST)
    jsonschema.validate(arguments, schema)
    assert arguments["place"]["kind"] == "city"
    assert len(arguments["stops"]) == 2
    assert arguments["limit"] >= 1


def test_a_cyclic_ref_ends_instead_of_recursing_forever() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/Node"}},
                "required": ["next"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    arguments = tool_arguments(ToolSpec("walk", schema), DIGEST)
    depth = 0
    while isinstance(arguments, dict) and "next" in arguments:
        arguments, depth = arguments["next"], depth + 1
    assert 1 < depth < 20


def test_a_tool_without_parameters_gets_no_arguments() -> None:
    assert tool_arguments(SEARCH, DIGEST) == {}
    assert tool_arguments(ToolSpec("odd", {"type": "string"}), b"") == {}


SCALARS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={"minLength": st.integers(0, 20), "maxLength": st.integers(20, 40)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("integer")},
        optional={"minimum": st.integers(-100, 100), "exclusiveMaximum": st.integers(101, 300)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("number")},
        optional={"minimum": st.floats(-5, 5), "maximum": st.floats(6, 9)},
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda values: {"enum": values}, st.lists(st.text(max_size=5), min_size=1)),
    st.just({"type": ["string", "null"]}),
)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


SCHEMAS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), inner, max_size=4).map(
            lambda props: _object(props, sorted(props))
        ),
        st.builds(
            lambda items, low: {"type": "array", "items": items, "minItems": low},
            inner,
            st.integers(0, 3),
        ),
        st.lists(inner, min_size=1, max_size=3).map(lambda choices: {"anyOf": choices}),
    ),
    max_leaves=12,
)


@given(SCHEMAS, st.binary(min_size=1, max_size=64))
def test_arguments_always_fit_whatever_the_schema(schema: dict[str, Any], digest: bytes) -> None:
    root = _object({"value": schema}, ["value"])
    arguments = tool_arguments(ToolSpec("any", root), digest)
    jsonschema.validate(arguments, root)


# -- chat completions in the sim call tools --------------------------------------------

CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
    }
]
ASK = [{"role": "user", "content": "Call get_weather for Oslo."}]


@pytest.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=SimApp(INSTANT))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


async def chat(sim: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": ASK, "tools": CHAT_TOOLS, **fields}
    return await sim.post("/v1/chat/completions", json=body)


async def test_a_chat_call_naming_a_tool_gets_tool_calls(sim: httpx.AsyncClient) -> None:
    answer = (await chat(sim)).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_SCHEMA)
    assert answer["usage"]["completion_tokens"] > 0
    assert (await chat(sim)).json()["choices"] == answer["choices"]  # deterministic


async def test_the_tools_result_gets_a_text_answer(sim: httpx.AsyncClient) -> None:
    asked = (await chat(sim)).json()["choices"][0]["message"]
    result = {"role": "tool", "tool_call_id": asked["tool_calls"][0]["id"], "content": "sunny"}
    answer = (await chat(sim, messages=[*ASK, asked, result])).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    assert answer["message"]["content"]
    assert "tool_calls" not in answer["message"]


async def test_tool_choice_forces_or_forbids_a_call(sim: httpx.AsyncClient) -> None:
    plain = [{"role": "user", "content": "What is the weather like?"}]
    assert (await chat(sim, messages=plain)).json()["choices"][0]["finish_reason"] == "stop"
    forced = (await chat(sim, messages=plain, tool_choice="required")).json()
    assert forced["choices"][0]["finish_reason"] == "tool_calls"
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert (await chat(sim, messages=plain, tool_choice=named)).json()["choices"][0]["message"][
        "tool_calls"
    ]
    refused = (await chat(sim, tool_choice="none")).json()["choices"][0]
    assert refused["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "always"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ],
)
async def test_bad_tools_are_400_naming_the_param(
    sim: httpx.AsyncClient, fields: dict[str, Any], param: str
) -> None:
    response = await chat(sim, **fields)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_a_streamed_tool_call_arrives_as_deltas(sim: httpx.AsyncClient) -> None:
    whole = (await chat(sim)).json()["choices"][0]["message"]["tool_calls"][0]
    async with sim.stream("POST", "/v1/chat/completions", json=_streamed()) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line[6:]) for line in lines]
    head = chunks[0]["choices"][0]["delta"]
    assert head["role"] == "assistant"
    assert head["tool_calls"][0] | {"function": {}} == {
        "index": 0,
        "id": whole["id"],
        "type": "function",
        "function": {},
    }
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"] for c in chunks[1:-1]]
    assert len(pieces) > 1
    assert "".join(p["arguments"] for p in pieces) == whole["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def _streamed() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": ASK, "tools": CHAT_TOOLS, "stream": True}
