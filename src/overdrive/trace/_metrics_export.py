"""The metrics exporter: the registry posted as OTLP/HTTP protobuf every interval.

Imported only when ``[tracing] metrics`` is on. It runs as a task on the
engine's home loop, the loop every stage reports on, so reading the registry
needs no lock; one export is in flight at most, and a collector that is down
costs a log line per outage, never a call.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import Callable

import httpx

from .._clock import Clock
from ..monitor import Metrics
from ._metrics_settings import MetricsSettings
from ._otlp_metrics import export_request

__all__ = ["OtlpMetricsExporter"]

logger = logging.getLogger("overdrive.trace")


class OtlpMetricsExporter:
    """Sends ``metrics`` to ``settings.endpoint`` every ``settings.interval`` on ``clock``.

    >>> exporter = OtlpMetricsExporter(od.metrics, settings, clock)  # doctest: +SKIP
    >>> await exporter.export_once()  # doctest: +SKIP
    True
    """

    __slots__ = (
        "_client",
        "_clock",
        "_closed",
        "_down",
        "_headers",
        "_metrics",
        "_sending",
        "_settings",
        "_start_ns",
        "_task",
        "_wall_ns",
        "exports",
        "failures",
        "skipped",
    )

    def __init__(
        self,
        metrics: Metrics,
        settings: MetricsSettings,
        clock: Clock,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._wall_ns = wall_ns
        # Every value counts from the registry's birth, about now: the cumulative start.
        self._start_ns = wall_ns()
        self._headers = {
            **settings.headers,
            "content-type": "application/x-protobuf",
            **({"content-encoding": "gzip"} if settings.gzip else {}),
        }
        self._client: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending = self._down = self._closed = False
        self.exports = 0  # accepted by the collector
        self.failures = 0  # refused, timed out, or not reached
        self.skipped = 0  # asked for while one was in flight

    @property
    def settings(self) -> MetricsSettings:
        return self._settings

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Export every interval on the running loop (the first after one), until closed.

        Started on a loop that has since closed, it starts again on this one.
        """
        task = self._task
        if self._closed or (task is not None and not task.done() and not _dead(task)):
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="overdrive-metrics-export")

    async def _run(self) -> None:
        interval = self._settings.interval
        due = self._clock.now() + interval
        while True:
            await self._clock.sleep(max(0.0, due - self._clock.now()))
            await self.export_once()
            # Ticks missed while a slow collector answered are skipped, not bunched up.
            due = max(due + interval, self._clock.now())

    async def export_once(self) -> bool:
        """Send every series now: True if the collector took them.

        False, and logged once per outage, when it did not; False at once
        while another export is still in flight (nothing queues behind it).
        """
        if self._sending:
            self.skipped += 1
            return False
        self._sending = True
        try:
            return await self._export()
        finally:
            self._sending = False

    async def _export(self) -> bool:
        try:
            response = await self._http().post(
                self._settings.endpoint, content=self._body(), headers=self._headers
            )
        except Exception as exc:  # a collector's trouble is never a call's
            return self._failed(f"{type(exc).__name__}: {exc}")
        if not response.is_success:
            return self._failed(f"HTTP {response.status_code}")
        self.exports += 1
        if self._down:
            self._down = False
            logger.info("metrics export to %s works again", self._settings.endpoint)
        return True

    def _body(self) -> bytes:
        request = export_request(
            self._metrics.collect(), self._settings.resource, self._start_ns, self._wall_ns()
        )
        body = request.SerializeToString()
        return gzip.compress(body, compresslevel=6) if self._settings.gzip else body

    def _failed(self, problem: str) -> bool:
        self.failures += 1
        if not self._down:  # once per outage: a collector down for a day is one line
            self._down = True
            logger.warning(
                "metrics export to %s failed (%s); retrying every %gs, quiet until it works",
                self._settings.endpoint,
                problem,
                self._settings.interval,
            )
        return False

    def _http(self) -> httpx.AsyncClient:
        """The client of the running loop (a pool of a dead loop is dropped, not reused)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            client = httpx.AsyncClient(
                timeout=self._settings.timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                headers={"user-agent": "overdrive-otlp-metrics"},
            )
            self._client = (loop, client)
        return self._client[1]

    async def close_idle(self) -> None:
        """The loop is shutting down: stop exporting and close the pool while it runs."""
        await self._stop()
        await self._close_client()

    async def aclose(self) -> None:
        """Stop exporting, send the final values once, and close the pool."""
        await self._stop()
        if not self._closed:
            self._closed = True
            await self.export_once()
        await self._close_client()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():  # another loop's task: cancel only
            await asyncio.wait({task})  # unlike awaiting it, keeps our own cancellation

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and client[0] is asyncio.get_running_loop():
            await client[1].aclose()

    def __repr__(self) -> str:
        state = "down" if self._down else "up"
        return (
            f"OtlpMetricsExporter({self._settings.endpoint!r}, every "
            f"{self._settings.interval:g}s, {state}, exports={self.exports}, "
            f"failures={self.failures})"
        )


def _dead(task: asyncio.Task[None]) -> bool:
    return task.get_loop().is_closed()
