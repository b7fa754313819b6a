"""The gateway door: the engine behind an OpenAI-compatible HTTP API (``overdrive gateway``)."""

from __future__ import annotations

from ._app import DEFAULT_MAX_BODY_BYTES, GatewayApp, create_app
from ._openapi import openapi_document
from ._protocol import GatewayProtocol
from ._server import GatewayServer, run_gateway
from ._tenants import Tenant, Tenants, hash_key

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "GatewayApp",
    "GatewayProtocol",
    "GatewayServer",
    "Tenant",
    "Tenants",
    "create_app",
    "hash_key",
    "openapi_document",
    "run_gateway",
]
