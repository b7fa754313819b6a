"""``[gateway] metrics``: who may read /metrics, /openapi.json and the report, on a real gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer

SECRET = "sk-ops-91c2"
AUTH = {"authorization": f"Bearer {SECRET}"}
WRONG = {"authorization": "Bearer sk-not-a-key"}
OPERATOR_PATHS = ("/metrics", "/openapi.json", "/v1/overdrive/report")


def config(policy: str | None, *, keys: bool) -> dict[str, Any]:
    gateway: dict[str, Any] = {} if policy is None else {"metrics": policy}
    if keys:
        gateway["keys"] = [{"name": "ops", "key_sha256": hash_key(SECRET)}]
    return {
        "upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}],
        "routing": {"health": {"probes": False}},
        "gateway": gateway,
    }


@pytest.fixture
def serve() -> Iterator[Any]:
    opened: list[GatewayServer] = []

    def start(policy: str | None, *, keys: bool) -> httpx.Client:
        server = GatewayServer(GatewayApp(config(policy, keys=keys))).start()
        opened.append(server)
        return httpx.Client(base_url=server.url)

    yield start
    for server in opened:
        server.stop()


def statuses(http: httpx.Client, headers: dict[str, str] | None = None) -> list[int]:
    return [http.get(path, headers=headers).status_code for path in OPERATOR_PATHS]


def test_keys_is_the_default_and_asks_a_valid_key_when_keys_are_configured(serve: Any) -> None:
    with serve(None, keys=True) as http:
        assert statuses(http) == [401, 401, 401]
        assert statuses(http, WRONG) == [401, 401, 401]
        assert statuses(http, AUTH) == [200, 200, 200]
        refused = http.get("/metrics")
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "ops" not in refused.text  # the key names stay behind the key
        assert http.get("/health/live").status_code == 200  # probes need none
        assert http.get("/health/ready").status_code in (200, 503)


def test_keys_without_configured_keys_lets_anyone_read(serve: Any) -> None:
    with serve("keys", keys=False) as http:
        assert statuses(http) == [200, 200, 200]


def test_public_lets_anyone_read_even_with_keys(serve: Any) -> None:
    with serve("public", keys=True) as http:
        assert statuses(http) == [200, 200, 200]
        assert http.post("/v1/chat/completions", json={}).status_code == 401  # the API still asks


@pytest.mark.parametrize("keys", [True, False], ids=["with keys", "without keys"])
def test_off_hides_them_behind_404(serve: Any, keys: bool) -> None:
    with serve("off", keys=keys) as http:
        assert statuses(http) == [404, 404, 404]
        assert statuses(http, AUTH) == [404, 404, 404]
        assert http.get("/metrics").json()["error"]["code"] == "unknown_url"
        assert http.head("/metrics").status_code == 404


def test_head_follows_the_policy_too(serve: Any) -> None:
    with serve("keys", keys=True) as http:
        assert http.head("/metrics").status_code == 401
        assert http.head("/metrics", headers=AUTH).status_code == 200
