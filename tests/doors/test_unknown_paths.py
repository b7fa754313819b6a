"""Paths no adapter knows: sent to a configured upstream or refused, never to the named host."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from overdrive import Overdrive
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, FakeUpstream, engine


def recorder(seen: list[httpx.Request]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": []})

    return handler


async def test_an_unknown_path_goes_to_the_only_upstream_with_its_key(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream")
    seen: list[httpx.Request] = []
    async with FakeServer(recorder(seen)) as upstream:
        od = engine(upstream, clock, api_key_env="UPSTREAM_KEY")
        async with od, od.http_client(base_url="http://internet.invalid/v1") as http:
            headers = {"authorization": "Bearer dummy"}
            response = await http.get("/files", params={"limit": "1"}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": []}
    assert response.headers["x-overdrive-upstream"] == "a"
    [request] = seen
    assert (request.url.path, request.url.query) == ("/v1/files", b"limit=1")
    assert request.headers["authorization"] == "Bearer sk-upstream"  # never the caller's
    assert od.metrics.counter("overdrive_requests_total", op="passthrough").value == 1


async def test_an_unknown_path_goes_to_the_upstream_serving_its_model(clock: FakeClock) -> None:
    seen_a: list[httpx.Request] = []
    seen_b: list[httpx.Request] = []
    async with FakeServer(recorder(seen_a)) as a, FakeServer(recorder(seen_b)) as b:
        config = {
            "upstreams": [
                {"name": "a", "base_url": a.url, "models": ["m"]},
                {"name": "b", "base_url": b.url, "models": ["legacy"]},
            ]
        }
        async with Overdrive.from_config(config, clock=clock) as od, od.http_client() as http:
            body = {"model": "legacy", "prompt": "hi"}
            response = await http.post("http://x.invalid/v1/completions", json=body)
            nowhere = await http.post("http://x.invalid/v1/completions", json={"prompt": "hi"})
    assert response.status_code == 200
    assert response.headers["x-overdrive-upstream"] == "b"
    assert [r.url.path for r in seen_b] == ["/v1/completions"]
    assert not seen_a
    # No model named, two upstreams: nowhere to send it.
    assert nowhere.status_code == 404
    error = nowhere.json()["error"]
    assert "POST /v1/completions" in error["message"]
    assert "no model" in error["message"]


async def test_reject_answers_404_naming_the_path(clock: FakeClock) -> None:
    async with (
        FakeUpstream(clock) as fake,
        engine(fake, clock) as od,
        od.http_client(unknown_paths="reject") as http,
    ):
        response = await http.get("http://x.invalid/v1/responses/resp_1")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "unknown_url"
    assert "GET /v1/responses/resp_1" in response.json()["error"]["message"]
    assert fake.calls == []


async def test_an_unknown_path_under_messages_is_refused_in_anthropics_shape(
    clock: FakeClock,
) -> None:
    async with (
        FakeUpstream(clock) as fake,
        engine(fake, clock) as od,
        od.http_client(unknown_paths="reject") as http,
    ):
        under = await http.get("http://x.invalid/v1/messages/")
        elsewhere = await http.get("http://x.invalid/v1/files")
    assert under.status_code == elsewhere.status_code == 404
    error = under.json()
    assert error["type"] == "error"  # what the anthropic SDK reads
    assert error["error"]["type"] == "not_found_error"  # Anthropic's name for a 404
    assert "GET /v1/messages/" in error["error"]["message"]
    assert "type" not in elsewhere.json()  # OpenAI's shape for the rest
    assert elsewhere.json()["error"]["type"] == "unknown_url"


async def test_reject_is_configurable_in_the_doors_section(clock: FakeClock) -> None:
    async with FakeUpstream(clock) as fake:
        config = {
            "upstreams": [{"name": "a", "base_url": fake.url, "models": ["m"]}],
            "doors": {"unknown_paths": "reject"},
        }
        async with Overdrive.from_config(config, clock=clock) as od, od.http_client() as http:
            response = await http.post("http://x.invalid/v1/completions", json={"model": "m"})
    assert response.status_code == 404
    assert fake.calls == []


def test_a_bad_policy_names_the_field() -> None:
    config = {
        "upstreams": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}],
        "doors": {"unknown_paths": "internet"},
    }
    with pytest.raises(Exception, match="unknown_paths"):
        Overdrive.from_config(config)


async def test_a_model_is_looked_up_in_the_configured_models(clock: FakeClock) -> None:
    async with FakeUpstream(clock) as fake, engine(fake, clock) as od, od.http_client() as http:
        found = await http.get("http://x.invalid/v1/models/m")
        missing = await http.get("http://x.invalid/v1/models/gpt-none")
    assert found.status_code == 200
    assert found.json()["id"] == "m"
    assert found.json()["object"] == "model"
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "model"
    assert fake.calls == []


async def test_the_gateway_follows_the_same_policy(clock: FakeClock) -> None:
    from overdrive.gateway import GatewayApp

    seen: list[httpx.Request] = []
    async with FakeServer(recorder(seen)) as upstream:
        config = {"upstreams": [{"name": "a", "base_url": upstream.url, "models": ["m"]}]}
        app = GatewayApp(config)
        await app.startup()
        try:
            sent = await app.serve("GET", "/v1/files", {}, b"")
            model = await app.serve("GET", "/v1/models/m", {}, b"")
        finally:
            await app.shutdown()
        rejecting = GatewayApp({**config, "doors": {"unknown_paths": "reject"}})
        await rejecting.startup()
        try:
            refused = await rejecting.serve("GET", "/v1/files", {}, b"")
        finally:
            await rejecting.shutdown()
    assert sent.status == 200
    assert [r.url.path for r in seen] == ["/v1/files"]
    assert model.status == 200
    assert refused.status == 404
    assert len(seen) == 1
