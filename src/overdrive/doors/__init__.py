"""Doors, inbound: how a call enters the pipeline.

The ``cached`` decorator (a function's calls through the cache stage), the
transports behind ``od.http_client()`` (httpx2 and httpx, async and sync), and
what both HTTP doors (those transports and the gateway) do with a request:
route an API call to its adapter, run it, turn the engine's errors into the
API's error answers, and send any other path as ``[doors] unknown_paths`` says.
"""

from __future__ import annotations

from ._answer import MODELS, REQUEST_HEADERS, Answer, Kind, answer, error_answer
from ._cached import cached
from ._clients import Flavour, make_client
from ._httpx2 import Httpx2Transport, SyncHttpx2Transport
from ._pipeline import Pipeline
from ._transport import EngineTransport, SyncEngineTransport
from ._unknown import Passage, UnknownPaths, respond, unknown_path

__all__ = [
    "MODELS",
    "REQUEST_HEADERS",
    "Answer",
    "EngineTransport",
    "Flavour",
    "Httpx2Transport",
    "Kind",
    "Passage",
    "Pipeline",
    "SyncEngineTransport",
    "SyncHttpx2Transport",
    "UnknownPaths",
    "answer",
    "cached",
    "error_answer",
    "make_client",
    "respond",
    "unknown_path",
]
