"""Fuzzing the gateway over real HTTP: no input earns a 5xx, and the server stays up.

Schemathesis generates calls from the gateway's own OpenAPI document (valid
and invalid bodies and admission headers), once as published and once with
``model`` narrowed to the models served, so that bodies reach the simulated
upstream instead of stopping at "unknown model". Hypothesis adds what the
document does not describe: wrong types in every field, nested garbage,
huge and negative numbers, lone surrogates, malformed JSON, wrong content
types, garbage in the admission and cache headers, random paths and methods,
and bytes that are not HTTP at all.

Every answer must be below 500; every error the app makes must be in the
OpenAI shape; a streamed 200 must end with ``[DONE]``. The gateway must log
no error meanwhile, and still serve health and a normal chat at the end.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from overdrive.gateway import GatewayApp
from overdrive.gateway._openapi import openapi_document
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
CLAUDE_MODEL = "claude-sim"
MAX_BODY = 64 * 1024
ERROR_KEYS = {"message", "type", "param", "code"}

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- the gateway under test


class _Errors(logging.Handler):
    """Keeps every ERROR the gateway or uvicorn logs: a caught bug still fails the run."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    handler = _Errors()
    loggers = [logging.getLogger(name) for name in ("overdrive", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture(scope="module")
def gateway(logged_errors: list[logging.LogRecord]) -> Iterator[GatewayServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, embed_base_s=0.0)) as sim:
        config = {
            "upstreams": [
                {"name": "sim", "base_url": sim.base_url, "models": [CHAT_MODEL, EMBED_MODEL]},
                {
                    "name": "claude",
                    "base_url": sim.base_url,
                    "api": "anthropic",
                    "models": [CLAUDE_MODEL],
                },
            ]
        }
        with GatewayServer(GatewayApp(config, max_body_bytes=MAX_BODY)) as server:
            yield server


@pytest.fixture(scope="module")
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


def assert_sound(
    status: int,
    content_type: str,
    body: bytes,
    *,
    method: str = "POST",
    whole: bool = True,
    path: str = "",
) -> None:
    """No 5xx; an error in the API's shape; a streamed answer read ``whole`` ends properly."""
    assert status < 500, f"{status}: {body[:500]!r}"
    if status >= 400 and method.upper() != "HEAD" and "/messages" in path:
        assert content_type.startswith("application/json"), (status, content_type, body[:200])
        answer = json.loads(body)
        assert answer["type"] == "error", answer
        assert isinstance(answer["error"]["type"], str)
        assert answer["error"]["message"]
    elif status >= 400 and method.upper() != "HEAD":
        assert content_type.startswith("application/json"), (status, content_type, body[:200])
        error = json.loads(body)["error"]
        assert set(error) == ERROR_KEYS, error
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
    if whole and status == 200 and content_type.startswith("text/event-stream"):
        assert body.endswith(_STREAM_ENDS.get(path, b"data: [DONE]\n\n")), body[-200:]


# What a complete stream of each API ends with (chat's: ``[DONE]``).
_STREAM_ENDS = {
    "/v1/responses": b"\n\n",
    "/v1/messages": b'data: {"type":"message_stop"}\n\n',
}


def assert_sound_response(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    assert_sound(
        response.status_code,
        content_type,
        response.content,
        method=response.request.method,
        path=response.request.url.path,
    )


# ---------------------------------------------------------------- from the OpenAPI document


def served_document() -> dict[str, Any]:
    """The published document with ``model`` narrowed to what the upstream serves.

    Without the admission headers too: the generated ones are mostly a 400
    before the body is looked at (test_hostile_headers_on_calls covers them).
    """
    document = copy.deepcopy(openapi_document())
    schemas = document["components"]["schemas"]
    schemas["ChatCompletionRequest"]["properties"]["model"] = {"enum": [CHAT_MODEL]}
    schemas["EmbeddingsRequest"]["properties"]["model"] = {"enum": [EMBED_MODEL]}
    schemas["ResponsesRequest"]["properties"]["model"] = {"enum": [CHAT_MODEL]}
    for anthropic in ("MessagesRequest", "CountTokensRequest"):
        schemas[anthropic]["properties"]["model"] = {"enum": [CLAUDE_MODEL]}
    for path in document["paths"]:
        if "post" not in document["paths"][path]:
            continue
        document["paths"][path]["post"]["parameters"] = []
    return document


PUBLISHED = schemathesis.openapi.from_dict(openapi_document())
SERVED = schemathesis.openapi.from_dict(served_document()).include(method="POST")
# Not positive_data_acceptance / negative_data_rejection: the document describes
# the API, it does not validate it. The gateway checks what it needs to route
# and price a call (a queue timeout of "0" or a model of "" is a 400 the schema
# allows) and forwards the rest, which the upstream may tolerate.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _call_case(case: schemathesis.Case[Any], gateway: GatewayServer) -> None:
    response = case.call(base_url=gateway.url, timeout=10)
    case.validate_response(response, checks=CHECKS)
    content_type = next(iter(response.headers.get("content-type", [])), "")
    # Schemathesis reads a stream up to a number of events, then hangs up.
    whole = not response.stream_cut_short
    assert_sound(
        response.status_code,
        content_type,
        response.content,
        method=case.method,
        whole=whole,
        path=case.path,
    )


@PUBLISHED.parametrize()
@settings(FUZZ, max_examples=30)
def test_published_document_gets_no_5xx(
    case: schemathesis.Case[Any], gateway: GatewayServer
) -> None:
    _call_case(case, gateway)


@SERVED.parametrize()
@settings(FUZZ, max_examples=40)
def test_served_models_get_no_5xx(case: schemathesis.Case[Any], gateway: GatewayServer) -> None:
    _call_case(case, gateway)


# ---------------------------------------------------------------- hostile inputs

BIG = 2**70
# Every code point, lone surrogates too (json.dumps escapes them as \udXXX).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=24)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-BIG, max_value=BIG),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), -1, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    ANY_TEXT,
)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
MODELS = st.sampled_from([CHAT_MODEL, EMBED_MODEL, "nope", "", " "]) | JSON
COUNTS = st.integers(min_value=-BIG, max_value=BIG) | st.integers(-2, 64) | JSON
TEXT = st.text(min_size=1, max_size=40)
VALID_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer"]), "content": TEXT}
)
HOSTILE_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "tool", "nobody", ""]) | JSON},
    optional={
        "content": ANY_TEXT
        | st.lists(
            st.fixed_dictionaries({"type": st.just("text") | JSON}, optional={"text": JSON}) | JSON,
            max_size=3,
        )
        | JSON,
        "name": JSON,
        "tool_calls": JSON,
    },
)
CHAT: dict[str, st.SearchStrategy[Any]] = {
    "model": MODELS,
    "messages": st.lists(VALID_MESSAGE | HOSTILE_MESSAGE, max_size=4) | JSON,
    "max_tokens": COUNTS,
    "max_completion_tokens": COUNTS,
    "temperature": st.floats(allow_nan=False, allow_infinity=False) | JSON,
    "top_p": JSON,
    "n": COUNTS,
    "stop": JSON,
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | JSON})
    | JSON,
    "tools": JSON,
    "response_format": JSON,
    "seed": COUNTS,
    "user": JSON,
    "logprobs": JSON,
}
EMBED: dict[str, st.SearchStrategy[Any]] = {
    "model": MODELS,
    "input": st.one_of(
        ANY_TEXT,
        st.lists(ANY_TEXT, max_size=4),
        st.lists(st.integers(min_value=-BIG, max_value=BIG), max_size=4),
        st.lists(st.lists(st.integers(min_value=-5, max_value=2**64), max_size=3), max_size=3),
        JSON,
    ),
    "encoding_format": st.sampled_from(["float", "base64", "int8"]) | JSON,
    "dimensions": COUNTS,
    "user": JSON,
}
VALID_CHAT = st.fixed_dictionaries(
    {
        "model": st.just(CHAT_MODEL),
        "messages": st.lists(VALID_MESSAGE, min_size=1, max_size=3),
        "max_tokens": st.integers(1, 16),
    },
    optional={"stream": st.booleans()},
)
VALID_EMBED = st.fixed_dictionaries(
    {
        "model": st.just(EMBED_MODEL),
        "input": TEXT
        | st.lists(TEXT, min_size=1, max_size=3)
        | st.lists(st.integers(0, 50_000), min_size=1, max_size=8),
    }
)


@st.composite
def mutated(
    draw: st.DrawFn,
    valid: st.SearchStrategy[dict[str, Any]],
    hostile: dict[str, st.SearchStrategy[Any]],
) -> dict[str, Any]:
    """A valid body with a few fields given hostile values, perhaps one dropped, stray keys."""
    body = draw(valid)
    for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=3, unique=True)):
        body[name] = draw(hostile[name])
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=1)):
        del body[name]
    body.update(draw(st.dictionaries(ANY_TEXT, JSON, max_size=2)))
    return body


CHAT_BODIES = mutated(VALID_CHAT, CHAT)
STREAM_BODIES = mutated(VALID_CHAT.map(lambda body: {**body, "stream": True}), CHAT)
EMBED_BODIES = mutated(VALID_EMBED, EMBED)


def encoded(value: Any) -> bytes:
    # ensure_ascii writes lone surrogates as escapes; big ints stay exact; NaN may appear.
    return json.dumps(value).encode()


@given(body=CHAT_BODIES)
@settings(FUZZ, max_examples=80)
def test_hostile_chat_bodies(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_sound_response(http.post("/v1/chat/completions", content=encoded(body)))


@given(body=EMBED_BODIES)
@settings(FUZZ, max_examples=60)
def test_hostile_embedding_bodies(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_sound_response(http.post("/v1/embeddings", content=encoded(body)))


# --- whole requests: method, path, headers, body -------------------------------

KNOWN_PATHS = list(openapi_document()["paths"])
SEGMENT = st.from_regex(r"\A([A-Za-z0-9._~-]|%[0-9A-Fa-f]{2}){1,12}\Z")
PATHS = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.builds(
        lambda p, s: p + s, st.sampled_from(KNOWN_PATHS), st.sampled_from(["/", "/x", "?a=%ff&b"])
    ),
    st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
# A legal header value: visible bytes (obs-text included) with no space at either end.
HEADER_BYTES = st.from_regex(rb"\A[!-~\x80-\xff]([ -~\x80-\xff]{0,40}[!-~\x80-\xff])?\Z")
NUMBERISH = st.one_of(
    st.integers(min_value=-BIG, max_value=BIG).map(str),
    st.floats().map(repr),
    st.integers(min_value=0, max_value=10**6).map(lambda n: f"{n}ms"),
    st.sampled_from(["nan", "inf", "-0", "1e-300", "0", "9" * 400, "9" * 5000, "1_000", "0x10"]),
    st.sampled_from(["5ms", "2m", "1h", "1d", "-1s", "0.000001", "1.5", "٣"]),
).map(str.encode)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        b"x-overdrive-priority": NUMBERISH | HEADER_BYTES,
        b"x-overdrive-queue-timeout": NUMBERISH | HEADER_BYTES,
        b"cache-control": st.sampled_from(
            [b"no-cache", b"no-store", b"max-age=0", b"max-age=abc", b"no-cache, no-store", b",,,"]
        )
        | HEADER_BYTES,
        b"content-type": st.sampled_from(
            [
                b"application/json",
                b"text/plain",
                b"application/x-www-form-urlencoded",
                b"multipart/form-data; boundary=x",
                b"application/json; charset=latin-1",
            ]
        )
        | HEADER_BYTES,
        b"accept": st.sampled_from([b"text/event-stream", b"*/*"]) | HEADER_BYTES,
        b"x-random": HEADER_BYTES,
    },
)
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    JSON.map(encoded),
    CHAT_BODIES.map(encoded),
    EMBED_BODIES.map(encoded),
    st.floats().map(lambda x: encoded({"model": CHAT_MODEL, "messages": [], "temperature": x})),
    st.integers(MAX_BODY - 2, MAX_BODY + 2).map(lambda n: b"{" + b" " * (n - 2) + b"}"),
)


@given(method=METHODS, path=PATHS, headers=HEADERS, body=BODIES)
@settings(FUZZ, max_examples=100)
def test_hostile_requests(
    http: httpx.Client, method: str, path: str, headers: dict[bytes, bytes], body: bytes
) -> None:
    response = http.request(method, path, headers=headers, content=body)
    assert_sound_response(response)


CALLS = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), CHAT_BODIES),
    st.tuples(st.just("/v1/chat/completions"), STREAM_BODIES),
    st.tuples(st.just("/v1/embeddings"), EMBED_BODIES),
)


@given(call=CALLS, headers=HEADERS)
@settings(FUZZ, max_examples=80)
def test_hostile_headers_on_calls(
    http: httpx.Client, call: tuple[str, dict[str, Any]], headers: dict[bytes, bytes]
) -> None:
    path, body = call
    assert_sound_response(http.post(path, content=encoded(body), headers=headers))


# --- bytes that are not (quite) HTTP ------------------------------------------------

STATUS_LINE = re.compile(rb"(?:\A|\r\n)HTTP/1\.[01] (\d{3})")


def exchange(gateway: GatewayServer, data: bytes) -> bytes:
    """Send ``data``, end the write side, and read until the server closes."""
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@given(
    data=st.one_of(
        st.binary(min_size=1, max_size=200),
        st.builds(
            lambda line, junk: line + junk,
            st.sampled_from(
                [
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n",
                    b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n",
                    b"GET /v1/models HTTP/1.0\r\n",
                ]
            ),
            st.binary(max_size=120),
        ),
    )
)
@settings(FUZZ, max_examples=40)
def test_garbage_bytes_on_the_socket(gateway: GatewayServer, data: bytes) -> None:
    reply = exchange(gateway, data)
    for status in STATUS_LINE.findall(reply):
        assert int(status) < 500, reply[:500]


# ---------------------------------------------------------------- after the fuzz


def test_after_the_fuzz_the_gateway_still_serves(
    http: httpx.Client, logged_errors: list[logging.LogRecord]
) -> None:
    assert http.get("/health/live").status_code == 200
    assert http.get("/health/ready").status_code == 200
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "still there?"}]}
    chat = http.post("/v1/chat/completions", json=body)
    assert chat.status_code == 200
    assert chat.json()["choices"][0]["message"]["content"]
    assert [r.getMessage() for r in logged_errors] == []
