"""The dashboard in a real headless chromium, on a real gateway over a simulated upstream.

It loads with no console error, its figures move while load runs, and once
the load stops the request count it shows is the one ``/metrics`` holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Error, Page
from prometheus_client.parser import text_string_to_metric_families

from overdrive.gateway import GatewayApp
from overdrive.gateway._server import GatewayServer
from overdrive.monitor.names import GATEWAY_REQUESTS, REQUESTS
from overdrive.sim import SimConfig, SimServer

from .browser import chromium, require_chromium
from .conftest import SECRET, chat, engine_config

AUTH = {"authorization": f"Bearer {SECRET}"}
# Generous: the feed ticks every second, chromium starts cold on a busy machine.
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimServer]:
    # A few ms per call, so load lasts long enough to be seen moving.
    with SimServer(SimConfig(ttft_s=0.005, per_token_s=0.0, jitter=0.0)) as server:
        yield server


@pytest.fixture
def gateway(slow_sim: SimServer) -> Iterator[GatewayServer]:
    with GatewayServer(GatewayApp(engine_config(slow_sim, keys=True))) as server:
        yield server


class Load:
    """Chat calls on a few threads until stopped: prompts repeat, so the cache answers some."""

    def __init__(self, base_url: str, threads: int = 3) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(base_url, n), daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, base_url: str, seed: int) -> None:
        with httpx.Client(base_url=base_url, headers=AUTH) as http:
            n = seed
            while not self._stop.is_set():
                http.post("/v1/chat/completions", json=chat(f"question {n % 17}"))
                n += 1

    @property
    def running(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)


def metric_total(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", headers=AUTH).text
    family = name.removesuffix("_total")
    return sum(
        sample.value
        for found in text_string_to_metric_families(text)
        if found.name == family
        for sample in found.samples
        if sample.name == name
    )


def watch_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    def on_page_error(error: Error) -> None:
        errors.append(f"page: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return errors


def shown(page: Page, selector: str, attribute: str = "data-value") -> float:
    value = page.get_attribute(selector, attribute)
    assert value is not None
    return float(value)


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/dashboard")
    page.fill("input[name=key]", SECRET)
    page.click("button[type=submit]")
    page.wait_for_function("Number(document.body.dataset.snapshots || 0) >= 1", timeout=WAIT_MS)


def test_the_page_follows_load_and_agrees_with_metrics(gateway: GatewayServer) -> None:
    executable = require_chromium()
    with chromium(executable) as browser:
        # Playwright's waits evaluate strings, which the page's CSP forbids (as it should):
        # this test lifts it; test_under_its_own_csp_the_page_goes_live_without_errors does not.
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        errors = watch_errors(page)
        sign_in(page, gateway.url)
        assert page.text_content("#status") == "live"
        before = shown(page, "#requests")
        with Load(gateway.url) as load:
            page.wait_for_function(
                f"Number(document.getElementById('requests').dataset.value) > {before} + 5",
                timeout=WAIT_MS,
            )
            assert load.running  # the figure moved while the load ran
            page.wait_for_function(
                "Number(document.getElementById('request-rate').dataset.value) > 0",
                timeout=WAIT_MS,
            )
        requests = metric_total(gateway.url, REQUESTS)
        served = metric_total(gateway.url, GATEWAY_REQUESTS)
        assert requests > before + 5
        # Quiet now: the next snapshots carry exactly what /metrics holds.
        page.wait_for_function(
            f"Number(document.getElementById('requests').dataset.value) === {requests}",
            timeout=WAIT_MS,
        )
        assert page.text_content("#keys tbody tr td") == "ops"
        key_requests = page.text_content("#keys tbody tr td:nth-child(2)") or ""
        assert float(key_requests.replace(",", "")) == served
        assert page.locator("#latency tbody tr").count() >= 2  # by op and by upstream
        assert page.text_content("#upstreams tbody tr td:nth-child(2)") == "healthy"
        assert page.text_content("#alerts li") == "No alert rules are judged here."
        assert errors == []


def test_under_its_own_csp_the_page_goes_live_without_errors(gateway: GatewayServer) -> None:
    executable = require_chromium()
    with chromium(executable) as browser:
        page = browser.new_page()
        errors = watch_errors(page)
        page.goto(f"{gateway.url}/dashboard")
        page.fill("input[name=key]", SECRET)
        page.click("button[type=submit]")
        # Locator waits run in playwright's own world: no eval, so the CSP stays on.
        page.locator('#status[data-state="live"]').wait_for(timeout=WAIT_MS)
        page.locator("body[data-snapshots]").wait_for(timeout=WAIT_MS)
        page.locator("#upstreams tbody td.state-healthy").wait_for(timeout=WAIT_MS)
        assert page.locator("#stages .bar").count() == 6
        assert errors == []


def test_the_page_reconnects_when_the_gateway_comes_back(slow_sim: SimServer) -> None:
    executable = require_chromium()
    app_config = engine_config(slow_sim, keys=True)
    first = GatewayServer(GatewayApp(app_config)).start()
    port = int(first.url.rsplit(":", 1)[1])
    with chromium(executable) as browser:
        page = browser.new_page(bypass_csp=True)
        sign_in(page, first.url)
        first.stop()
        page.locator('#status[data-state="lost"]').wait_for(timeout=WAIT_MS)
        with GatewayServer(GatewayApp(app_config), port=port) as second:
            # The session cookie is signed with the key's digest: a new process takes it.
            page.locator('#status[data-state="live"]').wait_for(timeout=WAIT_MS)
            assert second.url == first.url


def test_without_a_key_the_page_is_the_key_form(gateway: GatewayServer) -> None:
    executable = require_chromium()
    with chromium(executable) as browser:
        page = browser.new_page()
        response = page.goto(f"{gateway.url}/dashboard")
        assert response is not None
        assert response.status == 200
        assert page.locator("input[name=key]").count() == 1
        page.fill("input[name=key]", "sk-wrong")
        page.click("button[type=submit]")
        assert page.locator("input[name=key]").count() == 1  # still the form
