"""Serving the gateway: on uvicorn in the foreground, or in a background thread for tests."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

import uvicorn

# The sim's thread-and-socket machinery serves any ASGI app; only the config differs.
from ..config import CONFIG_ENV
from ..sim._server import _listen, _serve, _Uvicorn
from ._app import GatewayApp

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["GatewayServer", "run_gateway"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_GRACEFUL_SHUTDOWN_S = 1


class GatewayServer:
    """A :class:`GatewayApp` on a real socket, served by uvicorn in a background thread.

    The lifespan runs, so the engine is built on the server's loop and closed at stop.

    >>> with GatewayServer(GatewayApp(config)) as gateway:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    """

    __slots__ = ("_host", "_port", "_server", "_thread", "app")

    def __init__(self, app: GatewayApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``url + "/v1"``."""
        return self.url + "/v1"

    def start(self) -> GatewayServer:
        """Bind, start the engine and serving; return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("GatewayServer is already started")
        sock = _listen(self._host, self._port)
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        config = _uvicorn_config(self.app, self._host, self._port, foreground=False)
        self._server = server = _Uvicorn(config, ready)
        self._thread = threading.Thread(
            target=_serve, args=(server, sock, ready), name=f"overdrive-gateway:{self._port}"
        )
        self._thread.daemon = True
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S) or not server.started:
            self.stop()
            raise RuntimeError(f"the gateway did not start on {self.url}")
        return self

    def stop(self) -> None:
        """Stop serving (closing the engine) and join the thread; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"GatewayServer({self.url}, {state}, {self.app!r})"


def run_gateway(config: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve the gateway in the foreground; return after Ctrl+C.

    Each worker process builds its own app (and engine) from ``config``, passed
    on through ``$OVERDRIVE_CONFIG``.
    """
    os.environ[CONFIG_ENV] = os.path.abspath(config)
    settings = _settings(foreground=True)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            "overdrive.gateway._app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **settings,
        )


def _uvicorn_config(app: GatewayApp, host: str, port: int, *, foreground: bool) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, **_settings(foreground=foreground))


def _settings(*, foreground: bool) -> dict[str, Any]:
    """The lean uvicorn settings of the sim, with the lifespan on to build the engine."""
    # In the background the host process owns logging; we must not reconfigure it.
    logging: dict[str, Any] = (
        {"log_config": uvicorn.config.LOGGING_CONFIG, "log_level": "info"}
        if foreground
        else {"log_config": None, "log_level": "warning"}
    )
    return {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "on",
        "interface": "asgi3",
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "backlog": 4096,
        "timeout_graceful_shutdown": _GRACEFUL_SHUTDOWN_S,
        **logging,
    }
