"""``overdrive dashboard``: an engine and its dashboard, with a demo load to watch if asked.

With ``--demo`` (or no ``--config``) the engine's upstream is a simulated one
started here (two deployments, the second slower, both rate-limited so 429s
and retries show) and a few agents call it: repeated prompts hit the cache,
identical ones in flight coalesce, embeddings go through batching; the
optimizer runs, so its decisions show too.

>>> run_dashboard(None, Overdrive.from_config, port=8765)  # doctest: +SKIP
overdrive dashboard: http://127.0.0.1:8765/dashboard (Ctrl+C to stop)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Protocol

from ..sim import SimConfig, SimServer
from ._server import DashboardServer

__all__ = ["DEMO_MODEL", "Build", "Served", "demo_config", "demo_load", "run_dashboard"]

DEMO_MODEL = "gpt-4o-mini"
DEMO_EMBEDDINGS = "text-embedding-3-small"
# Prompts repeat (a few are asked far more often), so the cache and coalescing show.
_TOPICS = [f"Summarise ticket #{n} for the on-call engineer." for n in range(400)]
_DEMO_SIM = SimConfig(seed=3, rpm=900, ttft_s=0.08, per_token_s=0.002, embed_base_s=0.02)
_SLOW_SIM = SimConfig(seed=4, rpm=300, ttft_s=0.25, per_token_s=0.004, embed_base_s=0.05)


def demo_config(*base_urls: str) -> dict[str, Any]:
    """An engine config over the simulated deployments at ``base_urls``."""
    return {
        "upstreams": [
            {
                "name": f"sim-{i + 1}",
                "base_url": url,
                "models": [DEMO_MODEL, DEMO_EMBEDDINGS],
                "rpm": 600 if i == 0 else 240,
            }
            for i, url in enumerate(base_urls)
        ],
        "routing": {"health": {"probes": False}},
        "cache": {"disk": ""},
    }


async def demo_load(engine: Any, *, agents: int = 6, seed: int = 1) -> None:
    """Agents calling ``engine`` until cancelled: chats over skewed topics, some embeddings."""
    rng = random.Random(seed)
    await asyncio.gather(*(_agent(engine, random.Random(rng.random())) for _ in range(agents)))


async def _agent(engine: Any, rng: random.Random) -> None:
    while True:
        # A Zipf-like pick: low indices far more often, so answers repeat.
        topic = _TOPICS[min(len(_TOPICS) - 1, int(rng.paretovariate(1.2)) - 1)]
        try:
            if rng.random() < 0.2:
                await engine.embed(topic, model=DEMO_EMBEDDINGS)
            else:
                messages = [{"role": "user", "content": topic}]
                await engine.chat(model=DEMO_MODEL, messages=messages, max_tokens=32)
        except Exception:  # an upstream error is part of the show: counted, then on
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.0, 0.05))


class Served(Protocol):
    """What ``overdrive dashboard`` needs of an engine (an :class:`~overdrive.Overdrive`)."""

    def dashboard(self, port: int = ..., host: str = ...) -> DashboardServer: ...

    def optimize(self, **options: Any) -> object: ...

    async def aclose(self) -> None: ...


# Builds the engine from a TOML path or a config dict (``Overdrive.from_config``):
# handed in, since the engine's module sits above this package.
Build = Callable[[str | dict[str, Any]], Served]


def run_dashboard(
    config: str | None,
    build: Build,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    demo: bool = False,
) -> int:
    """Serve an engine's dashboard until Ctrl+C; with ``demo`` (or no config), a demo load."""
    try:
        asyncio.run(_serve(config, build, host, port, demo or config is None))
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve(config: str | None, build: Build, host: str, port: int, demo: bool) -> None:
    async with AsyncExitStack() as stack:
        urls: list[str] = []
        if demo:
            for sim_config in (_DEMO_SIM, _SLOW_SIM):
                urls.append(stack.enter_context(SimServer(sim_config)).base_url)
        od = build(config if config is not None else demo_config(*urls))
        stack.push_async_callback(od.aclose)
        server = od.dashboard(port=port, host=host)
        stack.push_async_callback(server.aclose)
        print(f"overdrive dashboard: {server.url} (Ctrl+C to stop)", flush=True)
        if demo:
            od.optimize(window=10.0)
            await demo_load(od)
        else:
            await asyncio.Event().wait()
