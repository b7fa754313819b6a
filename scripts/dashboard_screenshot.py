#!/usr/bin/env python3
"""Take docs/dashboard.png: the dashboard of a real gateway under load, in headless chromium.

Two simulated deployments (the second slower and rate-limited below what the
engine is told, so 429s and retries show), a gateway with two keys, agents
calling it through both, the optimizer running; after ``--seconds`` of load
chromium (Debian's, through playwright) photographs the page.

    python3 scripts/dashboard_screenshot.py [--seconds 25] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from overdrive.dashboard._demo import _TOPICS, DEMO_EMBEDDINGS, DEMO_MODEL
from overdrive.gateway import GatewayApp, hash_key
from overdrive.gateway._server import GatewayServer
from overdrive.sim import SimConfig, SimServer

KEYS = {"team-search": "sk-search-demo", "team-support": "sk-support-demo"}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def config(fast: str, slow: str) -> dict[str, Any]:
    models = [DEMO_MODEL, DEMO_EMBEDDINGS]
    return {
        "upstreams": [
            {"name": "sim-fast", "base_url": fast, "models": models, "rpm": 900},
            {"name": "sim-slow", "base_url": slow, "models": models, "rpm": 600},
        ],
        "routing": {"health": {"probes": False}},
        "cache": {"disk": ""},
        "alerts": {
            "interval": "2s",
            "rules": [
                {
                    "name": "upstream-slow",
                    "rule": "p95(overdrive_upstream_duration_seconds) by (upstream) > 200ms",
                    "severity": "ticket",
                },
                {
                    "name": "chat-slow",
                    "rule": "p95(overdrive_request_duration_seconds{op=chat}) > 50ms for 10m",
                    "severity": "page",
                },
            ],
        },
        "gateway": {
            "access_log": "off",
            "keys": [{"name": n, "key_sha256": hash_key(k)} for n, k in KEYS.items()],
        },
    }


def agent(url: str, key: str, seed: int, stop: threading.Event) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        while not stop.is_set():
            topic = _TOPICS[min(len(_TOPICS) - 1, int(rng.paretovariate(1.2)) - 1)]
            if rng.random() < 0.2:
                http.post("/v1/embeddings", json={"model": DEMO_EMBEDDINGS, "input": topic})
            else:
                body = {
                    "model": DEMO_MODEL,
                    "max_tokens": 32,
                    "messages": [{"role": "user", "content": topic}],
                }
                http.post("/v1/chat/completions", json=body)
            time.sleep(rng.uniform(0.0, 0.03))


def start_optimizer(app: GatewayApp) -> None:
    engine = app.engine
    assert engine is not None

    async def start() -> None:
        engine.optimize(window=5.0)

    engine.submit(start()).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--out", default="docs/dashboard.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("dashboard_screenshot: chromium is not installed", file=sys.stderr)
        return 2
    fast_sim = SimConfig(seed=3, ttft_s=0.04, per_token_s=0.001, embed_base_s=0.01)
    slow_sim = SimConfig(seed=4, rpm=240, ttft_s=0.15, per_token_s=0.003, embed_base_s=0.03)
    with (
        SimServer(fast_sim) as fast,
        SimServer(slow_sim) as slow,
        GatewayServer(GatewayApp(config(fast.base_url, slow.base_url))) as gateway,
        sync_playwright() as playwright,
    ):
        stop = threading.Event()
        agents = [
            threading.Thread(target=agent, args=(gateway.url, key, n, stop), daemon=True)
            for n, key in enumerate([*KEYS.values()] * 3)
        ]
        for thread in agents:
            thread.start()
        start_optimizer(gateway.app)
        browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
        page.goto(f"{gateway.url}/dashboard")
        page.fill("input[name=key]", KEYS["team-search"])
        page.click("button[type=submit]")
        page.locator('#status[data-state="live"]').wait_for()
        time.sleep(args.seconds)  # a by-hand script: let the history and the optimizer fill up
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
        stop.set()
        for thread in agents:
            thread.join()
    print(f"dashboard_screenshot: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
