"""Serving the simulated upstream on loopback: in a background thread, or in the foreground."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

from overdrive.sim._app import ASGIApp, SimApp

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from overdrive.sim._config import SimConfig

__all__ = ["SimServer", "run_sim"]

T = TypeVar("T")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_LOOP_CALL_TIMEOUT_S = 5.0
# A hung request whose client stays connected would otherwise hold shutdown for hang_s.
_GRACEFUL_SHUTDOWN_S = 1


class SimServer:
    """The simulated upstream on a real socket, served by uvicorn in a background thread.

    Port 0 picks a free port; read it back from :attr:`port` or :attr:`base_url`.

    >>> with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as sim:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=sim.base_url, api_key="sim")
    ...     client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    """

    __slots__ = ("_host", "_loop", "_port", "_server", "_thread", "app")

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = SimApp(config)
        self._host = host
        self._port = port
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

    def start(self) -> SimServer:
        """Bind, start serving, and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("SimServer is already started")
        sock = _listen(self._host, self._port)
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        self._server = server = _Uvicorn(_uvicorn_config(self.app, self._host, self._port), ready)
        self._thread = threading.Thread(
            target=_serve,
            args=(server, sock, ready),
            name=f"overdrive-sim:{self._port}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S) or not server.started:
            self.stop()
            raise RuntimeError(f"the simulated upstream did not start on {self.url}")
        self._loop = server.loop
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if thread.is_alive():
            self._on_loop(self.app.close)  # hung calls answer now, not after hang_s
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        self._server = self._thread = self._loop = None

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /stats``, read on the server's loop."""
        return self._on_loop(self.app.stats)

    def reset(self) -> None:
        """Zero the counters and refill the rate buckets."""
        self._on_loop(self.app.reset)

    def set_faults(
        self,
        error_rate: float | None = None,
        hang_rate: float | None = None,
        slow_factor: float | None = None,
    ) -> dict[str, float]:
        """Change fault injection while running; ``ConfigError`` (a ValueError) if out of range."""
        return self._on_loop(lambda: self.app.set_faults(error_rate, hang_rate, slow_factor))

    def _on_loop(self, work: Callable[[], T]) -> T:
        # The app's state belongs to the server loop; touch it only from there.
        loop = self._loop
        if loop is None:
            return work()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        loop.call_soon_threadsafe(_settle, done, work)
        return done.result(_LOOP_CALL_TIMEOUT_S)

    def __enter__(self) -> SimServer:
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
        return f"SimServer({self.url}, {state}, {self.app!r})"


def run_sim(config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the simulated upstream in the foreground; return after Ctrl+C.

    uvicorn's own log lines say where it listens; access logs stay off for speed.
    """
    server = uvicorn.Server(_uvicorn_config(SimApp(config), host, port, foreground=True))
    # uvicorn shuts down cleanly, then re-raises the SIGINT it caught; for a
    # command line that ends the run as asked, not as a crash.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


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


def _uvicorn_config(
    app: ASGIApp, host: str, port: int, *, foreground: bool = False
) -> uvicorn.Config:
    """The lean uvicorn settings: httptools, uvloop, no access log, no extra headers."""
    # In the background the host process owns logging; we must not reconfigure it.
    logging: dict[str, Any] = (
        {"log_config": uvicorn.config.LOGGING_CONFIG, "log_level": "info"}
        if foreground
        else {"log_config": None, "log_level": "warning"}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        interface="asgi3",
        access_log=False,
        server_header=False,
        date_header=False,
        backlog=4096,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        **logging,
    )


def _listen(host: str, port: int) -> socket.socket:
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


def _settle(done: concurrent.futures.Future[T], work: Callable[[], T]) -> None:
    try:
        done.set_result(work())
    except Exception as error:
        done.set_exception(error)
