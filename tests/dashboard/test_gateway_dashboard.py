"""The dashboard on a real gateway: `[gateway] metrics` decides who sees it; the session cookie."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from overdrive.dashboard import COOKIE
from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimServer

from .conftest import SECRET, chat, engine_config

AUTH = {"authorization": f"Bearer {SECRET}"}
PATHS = ("/dashboard/snapshot", "/dashboard/assets/dashboard.js")


@pytest.fixture
def serve(sim: SimServer) -> Iterator[Any]:
    opened: list[GatewayServer] = []

    def start(policy: str | None = None, *, keys: bool) -> httpx.Client:
        gateway: dict[str, Any] = {"keys": keys, "access_log": "text"}
        if policy is not None:
            gateway["metrics"] = policy
        server = GatewayServer(GatewayApp(engine_config(sim, **gateway))).start()
        opened.append(server)
        return httpx.Client(base_url=server.url)

    yield start
    for server in opened:
        server.stop()


def statuses(http: httpx.Client, headers: dict[str, str] | None = None) -> list[int]:
    return [http.get(path, headers=headers).status_code for path in PATHS]


def first_event(http: httpx.Client, headers: dict[str, str] | None = None) -> tuple[int, str]:
    with http.stream("GET", "/dashboard/live", headers=headers) as response:
        if response.status_code != 200:
            return response.status_code, ""
        lines = response.iter_lines()
        return 200, next(line for line in lines if line.startswith("event:"))


def test_keys_asks_a_key_for_the_figures_and_shows_the_key_form(serve: Any) -> None:
    with serve(keys=True) as http:
        # The assets are the package's code and style, no figure: the key form needs them.
        assert statuses(http) == [401, 200]
        form = http.get("/dashboard")
        assert form.status_code == 200
        assert 'name="key"' in form.text
        assert "EventSource" not in form.text
        assert "dashboard.js" not in form.text
        assert 'name="key"' not in http.get("/dashboard", headers=AUTH).text
        assert http.get("/dashboard/snapshot").json()["error"]["code"] == "invalid_api_key"
        assert first_event(http) == (401, "")
        assert statuses(http, AUTH) == [200, 200]
        assert first_event(http, AUTH) == (200, "event: snapshot")


def test_the_key_form_sets_a_session_cookie_that_opens_the_feed(serve: Any) -> None:
    with serve(keys=True) as http:
        wrong = http.post("/dashboard/login", data={"key": "sk-nope"})
        assert wrong.status_code == 401
        assert COOKIE not in http.cookies
        signed_in = http.post("/dashboard/login", data={"key": SECRET})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/dashboard"
        cookie = signed_in.headers["set-cookie"]
        assert SECRET not in cookie  # a signed token, never the key itself
        assert {"HttpOnly", "SameSite=Strict", "Path=/dashboard"} <= {
            part.strip() for part in cookie.split(";")
        }
        assert statuses(http) == [200, 200]
        assert first_event(http) == (200, "event: snapshot")
        # The cookie opens the dashboard only: the API still asks for the key.
        token = http.cookies[COOKIE]
        api = httpx.post(
            http.base_url.join("/v1/chat/completions"),
            json=chat("x"),
            headers={"cookie": f"{COOKIE}={token}"},
        )
        assert api.status_code == 401


def test_a_tampered_or_foreign_cookie_opens_nothing(serve: Any) -> None:
    with serve(keys=True) as http:
        http.post("/dashboard/login", data={"key": SECRET})
        name, expires, mac = http.cookies[COOKIE].split("~")
        for forged in (f"{name}~{int(expires) + 999}~{mac}", f"other~{expires}~{mac}", "x"):
            headers = {"cookie": f"{COOKIE}={forged}"}
            url = http.base_url.join("/dashboard/snapshot")
            assert httpx.get(url, headers=headers).status_code == 401


def test_keys_without_configured_keys_and_public_let_anyone_in(serve: Any) -> None:
    with serve("keys", keys=False) as open_http, serve("public", keys=True) as public:
        for http in (open_http, public):
            assert statuses(http) == [200, 200]
            assert first_event(http) == (200, "event: snapshot")


@pytest.mark.parametrize("keys", [True, False], ids=["with keys", "without keys"])
def test_off_hides_the_dashboard_behind_404(serve: Any, keys: bool) -> None:
    with serve("off", keys=keys) as http:
        assert statuses(http) == [404, 404]
        assert statuses(http, AUTH) == [404, 404]
        assert http.get("/dashboard").status_code == 404
        assert first_event(http, AUTH) == (404, "")
        assert http.post("/dashboard/login", data={"key": SECRET}).status_code == 404


def test_the_feed_shows_the_gateways_own_traffic(serve: Any) -> None:
    with serve(keys=True) as http:
        for prompt in ("a", "a", "b"):
            assert (
                http.post("/v1/chat/completions", json=chat(prompt), headers=AUTH).status_code
                == 200
            )
        shot = http.get("/dashboard/snapshot", headers=AUTH).json()
        assert shot["totals"]["requests"] == 3
        assert shot["totals"]["cache_hits"] == 1
        (ops,) = shot["keys"]
        assert (ops["key"], ops["requests"], ops["codes"]) == ("ops", 3, {"200": 3})


def test_no_key_reaches_the_access_log(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="overdrive.access")
    with serve(keys=True) as http:
        http.post("/dashboard/login", data={"key": SECRET})
        http.get(f"/dashboard?key={SECRET}")  # a key in the URL is not even read
        http.get("/dashboard/snapshot")
    lines = [r.getMessage() for r in caplog.records if r.name == "overdrive.access"]
    assert any("/dashboard/login" in line for line in lines)
    assert all(SECRET not in line and "~" not in line for line in lines)


def raw_get(url: str, target: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: sock.recv(65536), b""))


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/assets/../_app.py",
        "/dashboard/assets/%2e%2e/_routes.py",
        "/dashboard/assets/..%2f..%2fconfig.py",
        "/dashboard/assets/index.html",
        "/dashboard/assets/",
    ],
)
def test_only_the_allowed_assets_are_served(serve: Any, target: str) -> None:
    with serve("public", keys=False) as http:
        answer = raw_get(str(http.base_url).rstrip("/"), target)
    status = int(answer.split(b" ", 2)[1])
    assert status != 200
    assert b"import" not in answer
    assert b"<html" not in answer


def test_a_drain_ends_the_live_feeds(sim: SimServer) -> None:
    with (
        GatewayServer(GatewayApp(engine_config(sim))) as server,
        httpx.Client(base_url=server.url) as http,
        http.stream("GET", "/dashboard/live") as live,
    ):
        lines = live.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: snapshot"
        server.app.drain()  # what uvicorn's graceful shutdown does first
        rest = list(lines)  # ends within one interval: the drain is not held
        assert len([line for line in rest if line.startswith("event:")]) <= 1


def test_head_of_the_feed_is_its_head_alone(serve: Any) -> None:
    with serve("public", keys=False) as http:
        head = http.head("/dashboard/live")  # would never end if it opened the feed
        assert head.status_code == 200
        assert head.headers["content-type"] == "text/event-stream"
        assert head.content == b""
        assert http.head("/dashboard").status_code == 200
