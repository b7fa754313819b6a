"""Fixtures of the dashboard tests: a simulated upstream, engine configs over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from overdrive.gateway import hash_key
from overdrive.sim import SimConfig, SimServer

SECRET = "sk-ops-5d1e"
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, jitter=0.0)) as server:
        yield server


def engine_config(sim: SimServer, **gateway: Any) -> dict[str, Any]:
    """One upstream on the sim; ``keys=True`` adds the key ``ops`` (secret :data:`SECRET`)."""
    if gateway.pop("keys", False):
        gateway["keys"] = [{"name": "ops", "key_sha256": hash_key(SECRET)}]
    return {
        "upstreams": [{"name": "sim", "base_url": sim.base_url, "models": [MODEL]}],
        "routing": {"health": {"probes": False}},
        "retry": {"attempts": 0},
        "cache": {"disk": ""},
        "gateway": gateway,
    }


def chat(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
