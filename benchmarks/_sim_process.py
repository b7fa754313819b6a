"""A SimServer in a child process of its own, so contenders never share its CPU.

with SimProcess(SimConfig(rpm=1200)) as sim:
    ...sim.base_url...
    sim.stats()
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self, cast

from overdrive.sim import SimConfig, SimServer

__all__ = ["ChildServer", "SimProcess", "zero_latency_sim"]


class ChildServer:
    """A server in a spawned process of its own, run as ``target(*args, pipe)``.

    The child sends its address down the pipe once serving, then answers
    requests on it until it reads "stop".
    """

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=target, args=(*args, child), daemon=True)
        self.address: Any = None

    def __enter__(self) -> Self:
        self._process.start()
        self.address = self._pipe.recv()
        return self

    def ask(self, request: str) -> Any:
        """Send ``request`` to the child and return its answer."""
        self._pipe.send(request)
        return self._pipe.recv()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pipe.send("stop")
        self._process.join(10)


class SimProcess(ChildServer):
    """A fresh SimServer in a spawned process; ``stats()`` reads its counters."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(_serve_sim, config)

    @property
    def base_url(self) -> str:
        return str(self.address)

    def stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.ask("stats"))


def zero_latency_sim() -> SimConfig:
    """Answers at once, never rate-limits: all the latency measured is the client's own."""
    return SimConfig(
        ttft_s=0.0, per_token_s=0.0, jitter=0.0, embed_base_s=0.0, embed_per_item_s=0.0
    )


def _serve_sim(config: SimConfig, pipe: Connection) -> None:
    with SimServer(config) as sim:
        pipe.send(sim.base_url)
        while pipe.recv() == "stats":
            pipe.send(sim.stats())
