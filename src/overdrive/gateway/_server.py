"""Serving the gateway: on uvicorn in the foreground, or in a background thread for tests."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
from types import FrameType
from typing import Any

import uvicorn

from .._asgi_server import BackgroundServer, uvicorn_settings
from ..config import CONFIG_ENV, load_config
from ._app import GatewayApp
from ._exposure import check_exposure
from ._protocol import GatewayProtocol

__all__ = ["GatewayServer", "run_gateway"]


class GatewayServer(BackgroundServer):
    """A :class:`GatewayApp` on a real socket, served by uvicorn in a background thread.

    The lifespan runs, so the engine is built on the server's loop and closed at stop.

    >>> with GatewayServer(GatewayApp(config)) as gateway:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    """

    __slots__ = ()
    app: GatewayApp
    http = GatewayProtocol

    def __init__(self, app: GatewayApp, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(app, host, port, lifespan=True)


def run_gateway(
    config: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    allow_anonymous: bool = False,
    access_log: bool = True,
) -> None:
    """Serve the gateway in the foreground; return after Ctrl+C or SIGTERM.

    The config is checked here first, so a bad file fails once, plainly
    (:class:`~overdrive.ConfigError`), not in every worker. Each worker process
    then builds its own app (and engine) from it, found through
    ``$OVERDRIVE_CONFIG``. On shutdown the listening socket closes at once and
    requests in flight get ``[gateway] drain_timeout`` to finish.

    Without ``[[gateway.keys]]`` it listens only on loopback, unless
    ``allow_anonymous`` (or ``[gateway] allow_anonymous``) says otherwise.
    The access log goes to stderr unless ``access_log`` is False or
    ``[gateway] access_log = "off"``.
    """
    loaded = load_config(config)
    check_exposure(loaded, host, allow_anonymous=allow_anonymous)
    drain = loaded.gateway.drain_timeout
    os.environ[CONFIG_ENV] = os.path.abspath(config)
    settings = uvicorn_settings(foreground=True, lifespan=True, http=GatewayProtocol)
    if access_log and loaded.gateway.access_log != "off":
        settings["log_config"] = with_access_log(settings["log_config"])
    settings["timeout_graceful_shutdown"] = drain
    # uvicorn drains on SIGTERM, then raises the signal again for the handler it
    # found; this one makes that a clean exit (status 0) instead of death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            "overdrive.gateway._app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **settings,
        )


def with_access_log(log_config: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's logging config plus the ``overdrive.access`` logger, at INFO, to stderr.

    Each worker builds it (uvicorn configures logging in every process). The
    handler batches its writes: one system call per line would cost the
    gateway about a tenth of its throughput.
    """
    config = copy.deepcopy(log_config)
    config.setdefault("handlers", {})["overdrive_access"] = {
        "()": "overdrive.gateway._access_log.AccessLogHandler"
    }
    config.setdefault("loggers", {})["overdrive.access"] = {
        "handlers": ["overdrive_access"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
