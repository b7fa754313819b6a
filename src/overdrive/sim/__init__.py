"""A simulated OpenAI- and Anthropic-compatible upstream for demos, benchmarks and tests.

A real HTTP server speaking ``/v1/chat/completions``, ``/v1/responses`` and
Anthropic's ``/v1/messages`` (each streamed or not), ``/v1/embeddings`` and
``/v1/models``, with deterministic answers and tool calls, simulated latency,
rpm/tpm limits answered with 429s, and injectable faults.

>>> from overdrive.sim import SimConfig, SimServer
>>> with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as sim:  # doctest: +SKIP
...     client = openai.OpenAI(base_url=sim.base_url, api_key="sim")
...     client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
"""

from __future__ import annotations

from overdrive.sim._app import SimApp
from overdrive.sim._config import SimConfig
from overdrive.sim._server import SimServer, run_sim

__all__ = ["SimApp", "SimConfig", "SimServer", "run_sim"]
