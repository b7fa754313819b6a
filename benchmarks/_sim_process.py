"""A SimServer in a child process of its own, so contenders never share its CPU.

with SimProcess(SimConfig(rpm=1200)) as sim:
    ...sim.base_url...
    sim.stats()
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, cast

from overdrive.sim import SimConfig, SimServer

__all__ = ["SimProcess"]


class SimProcess:
    """A fresh SimServer in a spawned process; ``stats()`` reads its counters."""

    def __init__(self, config: SimConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve_sim, args=(config, child), daemon=True)
        self.base_url = ""

    def __enter__(self) -> SimProcess:
        self._process.start()
        self.base_url = self._pipe.recv()
        return self

    def stats(self) -> dict[str, Any]:
        self._pipe.send("stats")
        return cast(dict[str, Any], self._pipe.recv())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pipe.send("stop")
        self._process.join(10)


def _serve_sim(config: SimConfig, pipe: Connection) -> None:
    with SimServer(config) as sim:
        pipe.send(sim.base_url)
        while pipe.recv() == "stats":
            pipe.send(sim.stats())
