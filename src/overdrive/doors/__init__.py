"""Doors, inbound: how a call enters the pipeline.

The ``cached`` decorator (a function's calls through the cache stage), the
httpx transport behind ``od.http_client()``, and what both HTTP doors (that
transport and the gateway) do with an API call: route it to its adapter,
run it, and turn the engine's errors into the API's error answers.
"""

from __future__ import annotations

from ._answer import MODELS, REQUEST_HEADERS, Answer, Kind, answer, error_answer
from ._cached import cached
from ._pipeline import Pipeline
from ._transport import EngineTransport

__all__ = [
    "MODELS",
    "REQUEST_HEADERS",
    "Answer",
    "EngineTransport",
    "Kind",
    "Pipeline",
    "answer",
    "cached",
    "error_answer",
]
