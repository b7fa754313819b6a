"""Virtual API keys on the real gateway, in front of the real sim, with the real openai client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

TEAM_A, TEAM_B, TEAM_C, SLOW = "sk-a-7f3e9d", "sk-b-41c0aa", "sk-c-d00d11", "sk-slow-5e5e"
SECRETS = (TEAM_A, TEAM_B, TEAM_C, SLOW)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    def key(name: str, secret: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "key_sha256": hash_key(secret), **extra}

    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as sim:
        config = {
            "upstreams": [
                {"name": "sim", "base_url": sim.base_url, "models": ["gpt-4o-mini", "o-big"]}
            ],
            "gateway": {
                "keys": [
                    key("team-a", TEAM_A),
                    key("team-b", TEAM_B, cache_namespace="shared"),
                    key("team-c", TEAM_C, cache_namespace="shared", models=["gpt-4o-mini"]),
                    key("slow", SLOW, rpm=60, burst="1s"),
                ]
            },
        }
        with GatewayServer(GatewayApp(config)) as server:
            yield server


def client(gateway: GatewayServer, key: str) -> openai.OpenAI:
    """One client per key for the module's gateway, closed with the gateway."""
    found = _CLIENTS.get((gateway.port, key))
    if found is None:
        found = _CLIENTS[gateway.port, key] = openai.OpenAI(
            base_url=gateway.base_url, api_key=key, max_retries=0
        )
    return found


_CLIENTS: dict[tuple[int, str], openai.OpenAI] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for opened in _CLIENTS.values():
        opened.close()
    _CLIENTS.clear()


def ask(gateway: GatewayServer, key: str, prompt: str, model: str = "gpt-4o-mini") -> str:
    """The x-overdrive-cache mark of one chat call made with ``key``."""
    messages: Any = [{"role": "user", "content": prompt}]
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=8
    )
    raw.parse()
    return raw.headers["x-overdrive-cache"]


def test_no_key_or_a_wrong_key_is_401_in_the_openai_shape(gateway: GatewayServer) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        ask(gateway, "sk-not-a-key", "hello")
    assert info.value.status_code == 401
    assert "sk-not-a-key" not in str(info.value)
    with httpx.Client(base_url=gateway.url) as http:
        for path in ("/v1/models", "/v1/chat/completions"):
            response = http.request("GET" if "models" in path else "POST", path, json={})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        # Health stays open for probes; metrics name the keys, so they need one ([gateway] metrics).
        for path in ("/health/live", "/health/ready"):
            assert http.get(path).status_code == 200
        for path in ("/metrics", "/openapi.json"):
            assert http.get(path).status_code == 401
            assert http.get(path, headers={"authorization": f"Bearer {TEAM_A}"}).status_code == 200


def test_each_key_sees_only_its_own_cache(gateway: GatewayServer) -> None:
    assert [ask(gateway, TEAM_A, "private") for _ in range(2)] == ["MISS", "HIT"]
    assert ask(gateway, TEAM_B, "private") == "MISS"  # team-a's answer is not team-b's


def test_keys_naming_one_cache_namespace_share_it(gateway: GatewayServer) -> None:
    assert ask(gateway, TEAM_B, "shared question") == "MISS"
    assert ask(gateway, TEAM_C, "shared question") == "HIT"
    assert ask(gateway, TEAM_A, "shared question") == "MISS"


def test_a_model_outside_the_keys_list_is_403(gateway: GatewayServer) -> None:
    assert ask(gateway, TEAM_B, "big", model="o-big") == "MISS"
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(gateway, TEAM_C, "big", model="o-big")
    assert "may not use model 'o-big'" in str(info.value)


def test_a_key_lists_only_the_models_it_may_use(gateway: GatewayServer) -> None:
    listed = {key: [m.id for m in client(gateway, key).models.list()] for key in (TEAM_B, TEAM_C)}
    assert listed == {TEAM_B: ["gpt-4o-mini", "o-big"], TEAM_C: ["gpt-4o-mini"]}


def test_a_key_over_its_rpm_gets_429_with_retry_after(gateway: GatewayServer) -> None:
    assert ask(gateway, SLOW, "one") == "MISS"
    with pytest.raises(openai.RateLimitError) as info:
        ask(gateway, SLOW, "two")
    headers = info.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert info.value.body is not None


def test_requests_are_counted_per_key_and_status(gateway: GatewayServer) -> None:
    ask(gateway, TEAM_A, "count me")
    text = httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {TEAM_A}"}).text
    assert 'overdrive_gateway_requests_total{code="200",key="team-a"}' in text


def test_secrets_never_reach_logs_or_answers(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=gateway.url) as http:
        bodies = []
        for secret in (*SECRETS, "sk-wrong-123"):
            auth = {"authorization": f"Bearer {secret}"}
            for body in ({"model": "gpt-4o-mini", "messages": []}, {"model": "nope"}, "{"):
                response = http.post("/v1/chat/completions", headers=auth, content=str(body))
                bodies.append(response.text)
            bodies.append(http.get("/metrics", headers=auth).text)
    seen = caplog.text + "".join(bodies)
    for secret in (*SECRETS, "sk-wrong-123"):
        assert secret not in seen
