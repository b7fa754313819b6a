"""Serving the gateway: on uvicorn in the foreground, or in a background thread for tests."""

from __future__ import annotations

import contextlib
import os

import uvicorn

from .._asgi_server import BackgroundServer, uvicorn_settings
from ..config import CONFIG_ENV
from ._app import GatewayApp

__all__ = ["GatewayServer", "run_gateway"]


class GatewayServer(BackgroundServer):
    """A :class:`GatewayApp` on a real socket, served by uvicorn in a background thread.

    The lifespan runs, so the engine is built on the server's loop and closed at stop.

    >>> with GatewayServer(GatewayApp(config)) as gateway:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    """

    __slots__ = ()
    app: GatewayApp

    def __init__(self, app: GatewayApp, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(app, host, port, lifespan=True)


def run_gateway(config: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve the gateway in the foreground; return after Ctrl+C.

    Each worker process builds its own app (and engine) from ``config``, passed
    on through ``$OVERDRIVE_CONFIG``.
    """
    os.environ[CONFIG_ENV] = os.path.abspath(config)
    settings = uvicorn_settings(foreground=True, lifespan=True)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            "overdrive.gateway._app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **settings,
        )
