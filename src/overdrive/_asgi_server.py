"""Serving an ASGI app on uvicorn: lean settings, and a server in a background thread.

The simulated upstream, the gateway's tests and the benchmarks all need the
same thing: an app on a real loopback socket, started and stopped from
ordinary code. :class:`BackgroundServer` does that for any ASGI app.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import TYPE_CHECKING, Any, Self

import uvicorn

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["BackgroundServer", "free_port", "listen", "uvicorn_config", "uvicorn_settings"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# A hung request whose client stays connected would otherwise hold shutdown.
_GRACEFUL_SHUTDOWN_S = 1


def uvicorn_settings(
    *, foreground: bool, lifespan: bool, http: Any = "httptools"
) -> dict[str, Any]:
    """The lean uvicorn settings: httptools, uvloop, no access log, no extra headers.

    ``http`` may name a protocol class of uvicorn's own shape instead (the gateway's).
    """
    # In the background the host process owns logging; we must not reconfigure it.
    logging: dict[str, Any] = (
        {"log_config": uvicorn.config.LOGGING_CONFIG, "log_level": "info"}
        if foreground
        else {"log_config": None, "log_level": "warning"}
    )
    return {
        "loop": "uvloop",
        "http": http,
        # Nothing here reads the client's address; X-Forwarded-For is left alone.
        "proxy_headers": False,
        "ws": "none",
        "lifespan": "on" if lifespan else "off",
        "interface": "asgi3",
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "backlog": 4096,
        "timeout_graceful_shutdown": _GRACEFUL_SHUTDOWN_S,
        **logging,
    }


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    foreground: bool = False,
    lifespan: bool = False,
    http: Any = "httptools",
) -> uvicorn.Config:
    settings = uvicorn_settings(foreground=foreground, lifespan=lifespan, http=http)
    return uvicorn.Config(app, host=host, port=port, **settings)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, for a server started in another process."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    return sock


class BackgroundServer:
    """An ASGI app served by uvicorn in a daemon thread, on a real socket.

    >>> with BackgroundServer(app) as server:  # doctest: +SKIP
    ...     httpx.get(server.url + "/health")
    """

    __slots__ = ("_host", "_lifespan", "_loop", "_port", "_server", "_thread", "app")
    # uvicorn's protocol: "httptools", or a class of its shape.
    http: Any = "httptools"

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, lifespan: bool = False
    ) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._lifespan = lifespan
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's event loop while it runs."""
        return self._loop

    def start(self) -> Self:
        """Bind, start serving, and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        sock = listen(self._host, self._port)
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        config = uvicorn_config(
            self.app, self._host, self._port, lifespan=self._lifespan, http=self.http
        )
        self._server = server = _Uvicorn(config, ready)
        self._thread = threading.Thread(
            target=_serve,
            args=(server, sock, ready),
            name=f"overdrive-{type(self).__name__}:{self._port}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S) or not server.started:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start on {self.url}")
        self._loop = server.loop
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if thread.is_alive():
            self._before_stop()
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        self._server = self._thread = self._loop = None

    def _before_stop(self) -> None:
        """Called while still serving, just before shutdown begins."""

    def __enter__(self) -> Self:
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
        return f"{type(self).__name__}({self.url}, {state}, {self.app!r})"


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling another thread the moment it is serving."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.loop = asyncio.get_running_loop()
        self.ready.set()


def _serve(server: _Uvicorn, sock: socket.socket, ready: threading.Event) -> None:
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        ready.set()  # wake start() even when startup failed
