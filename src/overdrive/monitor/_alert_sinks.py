"""Where alert transitions go: a log, a callback, a webhook (HTTP POST of JSON).

Every sink takes an :class:`AlertEvent` and either delivers it or raises; the
evaluator counts and logs failures, so a broken sink never stops evaluation.

>>> sink = CallbackSink(print)
>>> sink.name
'callback'
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeAlias

import httpx
import orjson

from .._clock import Clock, SystemClock
from .._validate import check_int
from ._alert_vector import render

__all__ = [
    "AlertEvent",
    "AlertSink",
    "AlertState",
    "CallbackSink",
    "FilteredSink",
    "LogSink",
    "WebhookDeliveryError",
    "WebhookSink",
]

AlertState: TypeAlias = Literal["inactive", "pending", "firing", "resolved"]
logger = logging.getLogger("overdrive.alerts")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of one label set of one rule, as every sink receives it.

    ``series`` is the label set judged (e.g. ``{"model": "gpt-4o"}``; empty
    for a rule over unlabelled series), ``labels`` the rule's own (e.g.
    ``severity``), ``annotations`` its text for humans (``summary``, ...).
    ``since`` is the clock time of the transition, ``active_since`` when the
    condition started to hold; ``key`` is the same for every delivery of this
    transition (rule + label set + state + since), so receivers can drop duplicates.
    """

    rule: str
    expression: str
    state: AlertState
    value: float | None
    threshold: float
    since: float
    active_since: float
    key: str
    labels: Mapping[str, str] = field(default_factory=dict)
    repeat: int = 0  # 0 for the transition itself, n for the n-th reminder
    at: float = field(default_factory=time.time)  # wall time, for humans
    series: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line, e.g. ``[FIRING] chat-latency{model="gpt-4o"}: p95(...) > 3s (value 4.2)``."""
        value = "no data" if self.value is None else f"{self.value:.4g}"
        where = render(tuple(sorted(self.series.items())))
        return f"[{self.state.upper()}] {self.rule}{where}: {self.expression} (value {value})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload a webhook receives."""
        return {
            "rule": self.rule,
            "expression": self.expression,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "since": self.since,
            "active_since": self.active_since,
            "labels": dict(self.labels),
            "series": dict(self.series),
            "annotations": dict(self.annotations),
            "summary": self.summary,
            "idempotency_key": self.key,
            "repeat": self.repeat,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(),
        }


class AlertSink(Protocol):
    """Delivers alert events; raises when it could not (the evaluator counts that)."""

    @property
    def name(self) -> str: ...

    async def send(self, event: AlertEvent) -> None: ...

    async def aclose(self) -> None: ...


class LogSink:
    """Logs firing at WARNING and resolved (and anything else) at INFO."""

    __slots__ = ("_logger",)

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._logger = log or logger

    @property
    def name(self) -> str:
        return "log"

    async def send(self, event: AlertEvent) -> None:
        level = logging.WARNING if event.state == "firing" else logging.INFO
        self._logger.log(level, "%s", event.summary, extra={"alert": event.to_dict()})

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LogSink({self._logger.name!r})"


class CallbackSink:
    """Calls ``callback(event)``; a coroutine function is awaited."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[AlertEvent], Awaitable[None] | None]) -> None:
        self._callback = callback

    @property
    def name(self) -> str:
        return "callback"

    async def send(self, event: AlertEvent) -> None:
        result = self._callback(event)
        if inspect.isawaitable(result):
            await result

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"CallbackSink({self._callback!r})"


class FilteredSink:
    """``sink``, for the events of some rules and severities only (empty: all of them).

    >>> sink = FilteredSink(LogSink(), severities=["page"])
    >>> event = AlertEvent("r", "x > 1", "firing", 2.0, 1.0, 0.0, 0.0, key="k")
    >>> sink.accepts(event), sink.name
    (False, 'log')

    The evaluator asks :meth:`accepts` before sending, so an event filtered
    out is neither delivered nor counted.
    """

    __slots__ = ("_rules", "_severities", "sink")

    def __init__(
        self, sink: AlertSink, *, rules: Iterable[str] = (), severities: Iterable[str] = ()
    ) -> None:
        self.sink = sink
        self._rules = frozenset(rules)
        self._severities = frozenset(severities)

    @property
    def name(self) -> str:
        return self.sink.name

    def accepts(self, event: AlertEvent) -> bool:
        if self._rules and event.rule not in self._rules:
            return False
        return not self._severities or event.labels.get("severity") in self._severities

    async def send(self, event: AlertEvent) -> None:
        if self.accepts(event):
            await self.sink.send(event)

    async def aclose(self) -> None:
        await self.sink.aclose()

    def __repr__(self) -> str:
        return (
            f"FilteredSink({self.sink!r}, rules={sorted(self._rules)}, "
            f"severities={sorted(self._severities)})"
        )


class WebhookDeliveryError(Exception):
    """Every attempt to POST one event failed; the message says how the last one did."""


class WebhookSink:
    """POSTs each event as JSON to ``url``, retrying with exponential backoff.

    The ``Idempotency-Key`` header and the payload's ``idempotency_key`` are the
    same on every attempt, so a receiver that saw a POST whose answer was lost
    can drop the retry.

    >>> sink = WebhookSink("http://127.0.0.1:9/hook", attempts=2)
    >>> sink.name
    'webhook:127.0.0.1:9'

    Transport errors, 5xx and 429 are retried; any other status is final.
    """

    __slots__ = (
        "_attempts",
        "_backoff",
        "_client",
        "_clock",
        "_headers",
        "_loop",
        "_owns_client",
        "_timeout",
        "_url",
    )

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.5,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        check_int("attempts", attempts, 1)
        self._url = url
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._attempts = attempts
        self._backoff = backoff
        self._owns_client = client is None
        self._client = client  # None: made on the loop of the first send
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        # Backoff waits on real time by default: delivery is real I/O even when
        # the evaluator runs on a fake clock.
        self._clock: Clock = clock or SystemClock()

    @property
    def name(self) -> str:
        return f"webhook:{httpx.URL(self._url).netloc.decode()}"

    async def send(self, event: AlertEvent) -> None:
        body = orjson.dumps(event.to_dict())
        headers = {**self._headers, "idempotency-key": event.key}
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await self._clock.sleep(self._backoff * 2 ** (attempt - 1))
            problem = await self._post(body, headers)
            if not problem:
                return
            if not problem.startswith("retry"):
                break
        raise WebhookDeliveryError(f"POST {self._url} failed: {problem}")

    async def _post(self, body: bytes, headers: dict[str, str]) -> str:
        """'' when delivered; otherwise why, starting with 'retry' when worth retrying."""
        try:
            response = await self._http().post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"retry after {type(exc).__name__}: {exc}"
        status = response.status_code
        if status < 300:
            return ""
        verdict = "retry after" if status >= 500 or status == 429 else "gave up on"
        return f"{verdict} HTTP {status}"

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or (self._owns_client and self._loop is not loop):
            # Pooled connections belong to the loop that opened them: a new loop, a new pool.
            self._client, self._loop = httpx.AsyncClient(timeout=self._timeout), loop
        return self._client

    async def aclose(self) -> None:
        client = self._client
        if self._owns_client and client is not None:
            self._client = None
            if self._loop is asyncio.get_running_loop():
                await client.aclose()

    def __repr__(self) -> str:
        return f"WebhookSink({self._url!r}, attempts={self._attempts})"
