"""Serving the simulated upstream on loopback: in a background thread, or in the foreground."""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

from overdrive._asgi_server import BackgroundServer, uvicorn_config
from overdrive.sim._app import SimApp

if TYPE_CHECKING:
    from collections.abc import Callable

    from overdrive.sim._config import SimConfig

__all__ = ["SimServer", "run_sim"]

T = TypeVar("T")

_LOOP_CALL_TIMEOUT_S = 5.0


class SimServer(BackgroundServer):
    """The simulated upstream on a real socket, served by uvicorn in a background thread.

    Port 0 picks a free port; read it back from :attr:`port` or :attr:`base_url`.

    >>> with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as sim:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=sim.base_url, api_key="sim")
    ...     client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    """

    __slots__ = ()
    app: SimApp

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(SimApp(config), host, port)

    def _before_stop(self) -> None:
        self._on_loop(self.app.close)  # hung calls answer now, not after hang_s

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
        loop = self.loop
        if loop is None:
            return work()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        loop.call_soon_threadsafe(_settle, done, work)
        return done.result(_LOOP_CALL_TIMEOUT_S)


def run_sim(config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the simulated upstream in the foreground; return after Ctrl+C.

    uvicorn's own log lines say where it listens; access logs stay off for speed.
    """
    server = uvicorn.Server(uvicorn_config(SimApp(config), host, port, foreground=True))
    # uvicorn shuts down cleanly, then re-raises the SIGINT it caught; for a
    # command line that ends the run as asked, not as a crash.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


def _settle(done: concurrent.futures.Future[T], work: Callable[[], T]) -> None:
    try:
        done.set_result(work())
    except Exception as error:
        done.set_exception(error)
