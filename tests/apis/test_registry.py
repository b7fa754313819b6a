"""The registry: routing by method and path, lookup by name; adding an API is one adapter."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from overdrive import RequestError, apis
from overdrive._calls import FAMILIES, Call
from overdrive.apis import (
    CHAT,
    EMBEDDINGS,
    Api,
    for_request,
    named,
    register,
    registered,
    unregister,
)
from overdrive.apis._base import model_of
from overdrive.doors._answer import MODELS, route
from overdrive.gateway import GatewayApp
from overdrive.testing import FakeClock
from tests.fakes import FakeUpstream, engine


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(apis).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", "").startswith("overdrive.apis")
    }
    # Sorted as ruff sorts it: constants, then classes, then functions.
    kinds = sorted(apis.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert apis.__all__ == kinds
    assert set(apis.__all__) == public


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/openai/deployments/x/chat/completions", CHAT),  # any prefix
        ("POST", "/v1/embeddings", EMBEDDINGS),
        ("GET", "/v1/chat/completions", None),
        ("POST", "/v1/models", None),
        ("GET", "/v1/models", None),  # the doors' own answer, not an API's
        ("POST", "/v1/chat/completions/extra", None),
        ("POST", "/v1/completions", None),
    ],
)
def test_a_request_routes_to_the_adapter_of_its_method_and_path(
    method: str, path: str, api: Api | None
) -> None:
    assert for_request(method, path) is api


def test_the_doors_add_models_to_the_registry_s_routes() -> None:
    assert route("GET", "/v1/models") == MODELS
    assert route("POST", "/v1/embeddings") is EMBEDDINGS
    assert route("DELETE", "/v1/models") is None


def test_adapters_are_found_by_the_name_their_calls_carry() -> None:
    assert registered()[:2] == (CHAT, EMBEDDINGS)
    assert named("chat") is CHAT
    assert named(EMBEDDINGS.call({"model": "e", "input": "x"}).op) is EMBEDDINGS
    assert named("nope") is None
    assert {api.name: api for api in registered()} == FAMILIES


class Completions(Api):
    """The legacy completions API: its path ends like chat's."""

    __slots__ = ()

    name = "completions"
    path = "/completions"


def test_the_most_specific_path_wins_whatever_the_order_registered() -> None:
    legacy = register(Completions())
    try:
        assert for_request("POST", "/v1/completions") is legacy
        assert for_request("POST", "/v1/chat/completions") is CHAT
    finally:
        unregister(legacy)
    assert for_request("POST", "/v1/completions") is None
    assert "completions" not in FAMILIES


def test_a_taken_name_or_route_is_refused() -> None:
    class Chat2(Api):
        name, path = "chat", "/chat2"

    class Shadow(Api):
        name, path = "shadow", "/embeddings"

    with pytest.raises(ValueError, match="named 'chat'"):
        register(Chat2())
    with pytest.raises(ValueError, match="POST …/embeddings"):
        register(Shadow())
    with pytest.raises(ValueError, match="not registered"):
        unregister(Shadow())
    assert "shadow" not in FAMILIES
    assert registered()[:2] == (CHAT, EMBEDDINGS)


# -- adding an API family is one adapter -------------------------------------------


class Moderations(Api):
    """A test-only API family: one string ``input``, priced a token per 4 characters.

    Its errors have a shape of their own, to show the doors answer in it.
    """

    __slots__ = ()

    name = "moderations"
    path = "/moderations"

    def call(self, body: Mapping[str, Any]) -> Call:
        text = body.get("input")
        if not isinstance(text, str):
            raise RequestError("input", f"expected a string, got {text!r}")
        return Call(self.name, body, model_of(body), False, len(text) // 4, self)

    def error_payload(self, message: str, kind: str, param: str | None = None) -> dict[str, Any]:
        return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.fixture
def moderations() -> Iterator[Moderations]:
    api = register(Moderations())
    yield api
    unregister(api)


ASK = {"model": "m", "input": "is this text fine to publish?"}


def test_a_registered_adapter_is_routed_and_priced(moderations: Moderations) -> None:
    kind = route("POST", "/v1/moderations")
    assert kind is moderations
    assert isinstance(kind, Api)
    call = kind.call(ASK)
    assert (call.op, call.tokens, call.api) == ("moderations", 7, moderations)


async def test_a_registered_adapter_runs_the_whole_pipeline(
    moderations: Moderations, clock: FakeClock
) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od, od.http_client() as http:
        first = await http.post("http://anywhere.invalid/v1/moderations", json=ASK)
        second = await http.post("http://anywhere.invalid/v1/moderations", json=ASK)
        bad = await http.post("http://anywhere.invalid/v1/moderations", json={"model": "m"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert [path for _, path, _ in fake.calls] == ["/v1/moderations"]  # the repeat was cached
    assert fake.calls[0][2] == ASK
    assert second.headers["x-overdrive-cache"] == "HIT"
    assert od.metrics.value("overdrive_requests_total", op="moderations") == 2
    assert bad.status_code == 400
    assert bad.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "request field `input`: expected a string, got None",
        },
    }


async def test_the_gateway_serves_a_registered_adapter(moderations: Moderations) -> None:
    async with FakeUpstream() as fake:
        app = GatewayApp({"upstreams": [{"name": "a", "base_url": fake.url, "models": ["m"]}]})
        await app.startup()
        try:
            reply = await app.serve("POST", "/v1/moderations", {}, json.dumps(ASK).encode())
            refused = await app.serve("GET", "/v1/moderations", {}, b"")
        finally:
            await app.shutdown()
    assert reply.status == 200, reply.body
    assert [path for _, path, _ in fake.calls] == ["/v1/moderations"]
    assert refused.status == 405
