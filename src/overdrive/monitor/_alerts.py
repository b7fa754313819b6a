"""Alert evaluation: rules over metrics, a state per rule, each transition sent once.

::

    inactive ──condition true──► pending ──held for `for`──► firing
        ▲                          │                            │
        └──────condition false─────┘      condition false ──► resolved ──► inactive

Sinks receive *firing* and *resolved* (and reminders of firing when a rule has
``repeat_interval``); *pending* is visible in :meth:`Alerts.status` only, so a
condition that flaps inside its ``for`` window never notifies anyone. No data
(a percentile of an empty histogram, a rate before two readings, a division
by zero) counts as the condition being false.

>>> import asyncio
>>> from overdrive.monitor import Metrics
>>> from overdrive.testing import FakeClock
>>> from overdrive.monitor._alert_sinks import CallbackSink
>>> metrics, clock, seen = Metrics(), FakeClock(), []
>>> alerts = Alerts(metrics, ["errors_total > 2 for 30s"], [CallbackSink(seen.append)], clock=clock)
>>> metrics.counter("errors_total").inc(5)
>>> asyncio.run(alerts.evaluate())
[]
>>> clock.advance(30)
>>> [event.state for event in asyncio.run(alerts.evaluate())]
['firing']
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeGuard, TypeVar, cast

from .._clock import Clock, SystemClock
from .._errors import ConfigError
from .._validate import check_duration
from ._alert_parse import parse_rule
from ._alert_rules import (
    BinaryOp,
    Expr,
    Increase,
    Number,
    Percentile,
    Rate,
    Rule,
    Selector,
    Value,
)
from ._alert_sinks import AlertEvent, AlertSink, AlertState
from ._alert_source import MetricSource, MetricsSource, Registry
from .names import ALERT_NOTIFICATIONS

__all__ = ["Alerts", "MetricSource", "MetricsSource", "Registry"]

logger = logging.getLogger("overdrive.alerts")
_EPSILON = 1e-9  # float slack when comparing clock differences with durations
T = TypeVar("T")


class _History:
    """Recent counter samples per selector, so rates need no window in the source."""

    __slots__ = ("_keep", "_samples")

    def __init__(self, keep: float) -> None:
        self._keep = keep
        self._samples: dict[Selector, deque[tuple[float, float]]] = {}

    def record(self, selector: Selector, now: float, value: float | None) -> None:
        samples = self._samples.setdefault(selector, deque())
        if value is not None and (not samples or samples[-1][0] < now):
            samples.append((now, value))
        while samples and samples[0][0] < now - self._keep - _EPSILON:
            samples.popleft()

    def increase(self, selector: Selector, now: float, window: float) -> tuple[float, float] | None:
        """(rise, seconds spanned) over the samples within ``window``; None with fewer than 2."""
        recent = [s for s in self._samples.get(selector, ()) if s[0] >= now - window - _EPSILON]
        if len(recent) < 2:
            return None
        rise = 0.0
        for (_, before), (_, after) in itertools.pairwise(recent):
            # A drop means the counter restarted from zero (a new process).
            rise += after - before if after >= before else after
        return rise, recent[-1][0] - recent[0][0]


class _Reading:
    """One evaluation pass at one instant: rate histories recorded, expressions computed."""

    __slots__ = ("_history", "_now", "_source")

    def __init__(self, source: MetricSource, history: _History, now: float) -> None:
        self._source = source
        self._history = history
        self._now = now

    def record(self, selector: Selector) -> None:
        """Sample a counter that a rate() or increase() reads, into its history."""
        self._history.record(selector, self._now, self._source.sample(selector))

    def value(self, expr: Expr) -> float | None:
        match expr:
            case Number(value):
                return value
            case Value(selector):
                return self._source.sample(selector)
            case Rate(selector, window):
                found = self._history.increase(selector, self._now, window)
                return None if found is None or found[1] <= 0 else found[0] / found[1]
            case Increase(selector, window):
                found = self._history.increase(selector, self._now, window)
                return None if found is None else found[0]
            case Percentile(q, selector, window):
                return self._source.percentile(selector, q, window)
            case BinaryOp(op, left, right):
                return _arithmetic(op, self.value(left), self.value(right))
        raise TypeError(f"not an alert expression: {expr!r}")


def _arithmetic(op: str, left: float | None, right: float | None) -> float | None:
    if left is None or right is None:
        return None
    if op == "/":
        return None if right == 0 else left / right
    return left + right if op == "+" else left - right if op == "-" else left * right


def _counters(expr: Expr) -> set[Selector]:
    """The selectors of every rate() and increase() in ``expr``."""
    match expr:
        case Rate(selector) | Increase(selector):
            return {selector}
        case BinaryOp(_, left, right):
            return _counters(left) | _counters(right)
    return set()


def _lookbacks(expr: Expr) -> list[float]:
    match expr:
        case Rate(_, window) | Increase(_, window):
            return [window]
        case BinaryOp(_, left, right):
            return _lookbacks(left) + _lookbacks(right)
    return []


@dataclass(slots=True)
class _State:
    """Where one rule is in its lifecycle."""

    state: AlertState = "inactive"
    since: float = 0.0  # when it entered ``state``
    active_since: float = 0.0  # when the condition started to hold
    value: float | None = None
    last_sent: float = 0.0
    repeats: int = 0


class Alerts:
    """Evaluates ``rules`` every ``interval`` seconds and tells ``sinks`` of each transition.

    >>> from overdrive.monitor import Metrics
    >>> from overdrive.testing import FakeClock
    >>> alerts = Alerts(Metrics(), ["p95(overdrive_request_duration_seconds) > 3s for 1m"],
    ...                 clock=FakeClock())
    >>> alerts.state("p95(overdrive_request_duration_seconds) > 3s for 1m")
    'inactive'

    ``metrics`` is a :class:`Metrics` registry or any :class:`MetricSource`.
    Drive it with ``await alerts.evaluate()`` (tests, a scheduler of your own)
    or ``start()`` it to evaluate on the clock until ``aclose()``. Delivery
    outcomes are counted in ``overdrive_alert_notifications_total{sink, outcome}``.
    """

    __slots__ = (
        "_clock",
        "_counts",
        "_history",
        "_instance",
        "_interval",
        "_lock",
        "_rules",
        "_sinks",
        "_source",
        "_states",
        "_task",
        "_watched",
        "failures",
    )

    def __init__(
        self,
        metrics: Registry | MetricSource,
        rules: Iterable[Rule | str],
        sinks: Iterable[AlertSink] = (),
        *,
        clock: Clock | None = None,
        interval: float = 15.0,
    ) -> None:
        check_duration("alerts.interval", interval, positive=True)
        self._rules = _rules(rules)
        self._sinks = list(sinks)
        self._clock: Clock = clock or SystemClock()
        self._interval = interval
        if _is_source(metrics):
            self._source: MetricSource = metrics
            self._counts: Registry | None = None
        else:
            registry = cast("Registry", metrics)  # TypeGuard does not narrow the else branch
            self._source, self._counts = MetricsSource(registry), registry
        self.failures = 0  # deliveries that failed after the sink's own retries
        keep = max((w for rule in self._rules for w in _lookbacks(rule.expr)), default=0.0)
        self._history = _History(keep)
        watched = set().union(*(_counters(rule.expr) for rule in self._rules))
        self._watched = sorted(watched, key=str)
        self._states = {rule.name: _State() for rule in self._rules}
        # Keys must differ between runs: a restarted process starts its clock anew.
        self._instance = os.urandom(8).hex()
        self._task: asyncio.Task[None] | None = None
        # One pass at a time: a manual evaluate() beside start() must not send twice.
        self._lock = asyncio.Lock()

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules)

    def state(self, rule: str) -> AlertState:
        """The state of the rule named ``rule``."""
        return self._states[rule].state

    def status(self) -> list[dict[str, Any]]:
        """Every rule with its state, last value and since when (plain data)."""
        return [
            {
                "rule": rule.name,
                "expression": rule.expression,
                "state": self._states[rule.name].state,
                "value": self._states[rule.name].value,
                "since": self._states[rule.name].since,
            }
            for rule in self._rules
        ]

    async def evaluate(self) -> list[AlertEvent]:
        """One pass: read every rule, move its state, deliver the transitions; returns them."""
        async with self._lock:
            return await self._evaluate()

    async def _evaluate(self) -> list[AlertEvent]:
        now = self._clock.now()
        reading = _Reading(self._source, self._history, now)
        for selector in self._watched:
            _guarded(partial(reading.record, selector))
        events: list[AlertEvent] = []
        for rule in self._rules:
            event = self._step(rule, _guarded(partial(reading.value, rule.expr)), now)
            if event is not None:
                events.append(event)
        if events:
            await asyncio.gather(*(self._deliver(sink, events) for sink in self._sinks))
        return events

    def _step(self, rule: Rule, value: float | None, now: float) -> AlertEvent | None:
        """Advance ``rule``'s state with this pass's ``value``; the event to send, if any."""
        state = self._states[rule.name]
        state.value = value
        if not rule.holds(value):
            return self._fall(rule, state, now)
        if state.state in ("inactive", "resolved"):
            state.state, state.since, state.active_since = "pending", now, now
        if state.state == "pending" and now - state.active_since >= rule.duration - _EPSILON:
            state.state, state.since, state.last_sent, state.repeats = "firing", now, now, 0
            return self._event(rule, state)
        return self._reminder(rule, state, now) if state.state == "firing" else None

    def _fall(self, rule: Rule, state: _State, now: float) -> AlertEvent | None:
        """The condition does not hold: a firing alert resolves, anything else goes quiet."""
        if state.state != "firing":
            state.state = "inactive"
            return None
        state.state, state.since = "resolved", now
        return self._event(rule, state)

    def _reminder(self, rule: Rule, state: _State, now: float) -> AlertEvent | None:
        repeat = rule.repeat_interval
        if repeat is None or now - state.last_sent < repeat - _EPSILON:
            return None
        state.last_sent, state.repeats = now, state.repeats + 1
        return self._event(rule, state)

    def _event(self, rule: Rule, state: _State) -> AlertEvent:
        repeat = state.repeats if state.state == "firing" else 0
        identity = f"{self._instance}|{rule.name}|{state.state}|{state.since!r}|{repeat}"
        return AlertEvent(
            rule=rule.name,
            expression=rule.expression,
            state=state.state,
            value=state.value,
            threshold=rule.threshold,
            since=state.since,
            active_since=state.active_since,
            key=hashlib.blake2b(identity.encode(), digest_size=16).hexdigest(),
            labels=dict(rule.labels),
            repeat=repeat,
        )

    async def _deliver(self, sink: AlertSink, events: list[AlertEvent]) -> None:
        """Send ``events`` to ``sink`` in order; a failure is logged and counted, not raised."""
        for event in events:
            try:
                await sink.send(event)
            except Exception as exc:
                logger.error("alert sink %s failed on %s: %s", sink.name, event.summary, exc)
                outcome = "failed"
            else:
                outcome = "delivered"
            self.failures += outcome == "failed"
            if self._counts is not None:
                self._counts.counter(ALERT_NOTIFICATIONS, sink=sink.name, outcome=outcome).inc()

    def start(self) -> None:
        """Evaluate now and then every ``interval`` on the clock, until :meth:`aclose`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="overdrive-alerts")

    async def _run(self) -> None:
        due = self._clock.now()
        while True:
            await self.evaluate()
            now = self._clock.now()
            # Ticks missed while a slow sink delivered are skipped, not bunched up.
            due = max(due + self._interval, now)
            await self._clock.sleep(due - now)

    async def aclose(self) -> None:
        """Stop evaluating and close the sinks."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self._sinks:
            await sink.aclose()

    async def __aenter__(self) -> Alerts:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for state in self._states.values():
            counts[state.state] = counts.get(state.state, 0) + 1
        shown = ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
        return f"Alerts(rules={len(self._rules)}, {shown}, interval={self._interval:g}s)"


def _rules(rules: Iterable[Rule | str]) -> list[Rule]:
    """Parse strings, and refuse two rules of one name (their states would merge)."""
    parsed = [
        parse_rule(rule, field=f"alerts[{i}].rule") if isinstance(rule, str) else rule
        for i, rule in enumerate(rules)
    ]
    seen: set[str] = set()
    for i, rule in enumerate(parsed):
        if rule.name in seen:
            raise ConfigError(f"alerts[{i}].name", f"another rule is named {rule.name!r}")
        seen.add(rule.name)
    return parsed


def _is_source(metrics: Registry | MetricSource) -> TypeGuard[MetricSource]:
    return callable(getattr(metrics, "sample", None))


def _guarded(read: Callable[[], T]) -> T | None:
    """``read()``, or None (no data) when the metric source fails: evaluation goes on."""
    try:
        return read()
    except Exception:
        logger.exception("alert evaluation could not read its metrics")
        return None
