"""The gateway door: the engine behind an OpenAI-compatible HTTP API (``overdrive gateway``)."""

from __future__ import annotations

from .._errors import KeyLimitError, ModelNotAllowedError
from ._app import REPORT_PATH, GatewayApp
from ._protocol import GatewayProtocol
from ._server import run_gateway
from ._tenants import hash_key

__all__ = [
    "REPORT_PATH",
    "GatewayApp",
    "GatewayProtocol",
    "KeyLimitError",
    "ModelNotAllowedError",
    "hash_key",
    "run_gateway",
]
