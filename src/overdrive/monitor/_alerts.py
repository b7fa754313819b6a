"""Alert evaluation: rules over metrics, judged per label set, each transition sent once.

A rule's expression gives one value per label set of the series it reads
(``p95(latency_seconds{op=chat})`` one per ``model``/``upstream``/... seen,
see ``_alert_vector`` for how two operands match), and every label set has a
state of its own, its own ``for`` timer and its own reminders::

    inactive ──condition true──► pending ──held for `for`──► firing
        ▲                          │                            │
        └──────condition false─────┘      condition false ──► resolved ──► inactive

Sinks receive *firing* and *resolved* (and reminders of firing when a rule has
``repeat_interval``); *pending* is visible in :meth:`Alerts.status` only, so a
condition that flaps inside its ``for`` window never notifies anyone. No data
(a percentile of an empty histogram, a rate before two readings, a division
by zero, a label set no longer there) counts as the condition being false:
a label set that disappears resolves if it was firing and is then forgotten.

A rule tracks at most ``max_series`` label sets (1,000 by default). Once
full, new label sets are not tracked and are counted in :attr:`Alerts.dropped`
(the ones already tracked keep their timers: a flood of new label sets cannot
push out a firing alert, nor grow memory).

>>> import asyncio
>>> from overdrive.monitor import Metrics
>>> from overdrive.testing import FakeClock
>>> from overdrive.monitor._alert_sinks import CallbackSink
>>> metrics, clock, seen = Metrics(), FakeClock(), []
>>> alerts = Alerts(metrics, ["errors_total > 2 for 30s"], [CallbackSink(seen.append)], clock=clock)
>>> metrics.counter("errors_total", model="a").inc(5)
>>> metrics.counter("errors_total", model="b").inc(1)
>>> asyncio.run(alerts.evaluate())
[]
>>> clock.advance(30)
>>> [event.summary for event in asyncio.run(alerts.evaluate())]
['[FIRING] errors_total > 2 for 30s{model="a"}: errors_total > 2 for 30s (value 5)']
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeGuard, TypeVar, cast

from .._clock import Clock, SystemClock
from .._errors import ConfigError
from .._validate import check_duration, check_int
from ._alert_eval import EPSILON, History, Reading, counters, lookbacks
from ._alert_parse import parse_rule
from ._alert_rules import Rule
from ._alert_sinks import AlertEvent, AlertSink, AlertState, FilteredSink
from ._alert_source import MetricSource, MetricsSource, Registry
from ._alert_vector import Labels, Vector, render
from .names import ALERT_NOTIFICATIONS

__all__ = ["Alerts", "MetricSource", "MetricsSource", "Registry"]

logger = logging.getLogger("overdrive.alerts")
T = TypeVar("T")
MAX_SERIES = 1000
# Which state a rule shows when asked without a label set: the most urgent of its sets.
_URGENCY = {"firing": 3, "pending": 2, "resolved": 1, "inactive": 0}


@dataclass(slots=True)
class _State:
    """Where one label set of one rule is in its lifecycle."""

    labels: Labels
    state: AlertState = "inactive"
    since: float = 0.0  # when it entered ``state``
    active_since: float = 0.0  # when the condition started to hold
    value: float | None = None
    last_sent: float = 0.0
    repeats: int = 0


class _Tracked:
    """One rule's label sets and their states, at most ``limit`` of them."""

    __slots__ = ("dropped", "limit", "states")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.states: dict[Labels, _State] = {}
        self.dropped = 0  # label sets seen while full, so not tracked

    def get(self, labels: Labels) -> _State | None:
        """The state of ``labels``, made if there is room; None (counted) when full."""
        state = self.states.get(labels)
        if state is None:
            if len(self.states) >= self.limit:
                self.dropped += 1
                return None
            state = self.states[labels] = _State(labels)
        return state


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
    ``max_series`` bounds the label sets tracked per rule (and per rate history).
    """

    __slots__ = (
        "_clock",
        "_counts",
        "_history",
        "_instance",
        "_interval",
        "_limit",
        "_lock",
        "_rules",
        "_sinks",
        "_source",
        "_task",
        "_tracked",
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
        max_series: int = MAX_SERIES,
    ) -> None:
        check_duration("alerts.interval", interval, positive=True)
        check_int("alerts.max_series", max_series, 1)
        self._rules = _rules(rules)
        self._sinks = list(sinks)
        self._clock: Clock = clock or SystemClock()
        self._interval = interval
        self._limit = max_series
        self._source, self._counts = _source_of(metrics)
        self.failures = 0  # deliveries that failed after the sink's own retries
        keep = max((w for rule in self._rules for w in lookbacks(rule.expr)), default=0.0)
        self._history = History(keep, max_series)
        watched = set().union(*(counters(rule.expr) for rule in self._rules))
        self._watched = sorted(watched, key=str)
        self._tracked = {rule.name: _Tracked(max_series) for rule in self._rules}
        # Keys must differ between runs: a restarted process starts its clock anew.
        self._instance = os.urandom(8).hex()
        self._task: asyncio.Task[None] | None = None
        # One pass at a time: a manual evaluate() beside start() must not send twice.
        self._lock: asyncio.Lock | None = None

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules)

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def dropped(self) -> dict[str, int]:
        """Per rule, label sets seen but not tracked because it already tracked ``max_series``."""
        return {name: tracked.dropped for name, tracked in self._tracked.items()}

    def state(self, rule: str, labels: Mapping[str, str] | None = None) -> AlertState:
        """The state of ``labels`` under the rule named ``rule``; without labels, its most urgent.

        A label set not tracked (never seen, or gone) is ``inactive``.
        """
        states = self._tracked[rule].states
        if labels is not None:
            found = states.get(tuple(sorted(labels.items())))
            return "inactive" if found is None else found.state
        return max((s.state for s in states.values()), key=_URGENCY.__getitem__, default="inactive")

    def status(self) -> list[dict[str, Any]]:
        """Every tracked label set of every rule: state, last value, since when (plain data).

        A rule that tracks no label set yet shows once, with empty labels.
        """
        rows: list[dict[str, Any]] = []
        for rule in self._rules:
            states = self._tracked[rule.name].states.values()
            rows.extend(_row(rule, state) for state in (states or [_State(())]))
        return rows

    async def evaluate(self) -> list[AlertEvent]:
        """One pass: read every rule, move each label set's state, deliver; returns the events."""
        if self._lock is None:  # made here, on the loop that evaluates
            self._lock = asyncio.Lock()
        async with self._lock:
            return await self._evaluate()

    async def _evaluate(self) -> list[AlertEvent]:
        now = self._clock.now()
        reading = Reading(self._source, self._history, now, self._limit)
        for selector in self._watched:
            _guarded(partial(reading.record, selector))
        events: list[AlertEvent] = []
        for rule in self._rules:
            vector = _guarded(partial(reading.vector, rule.expr))
            events.extend(self._judge(rule, vector or {}, now))
        if events:
            await asyncio.gather(*(self._deliver(sink, events) for sink in self._sinks))
        return events

    def _judge(self, rule: Rule, vector: Vector, now: float) -> list[AlertEvent]:
        """Step every label set of ``rule``: the ones gone first, then the ones read now."""
        tracked = self._tracked[rule.name]
        gone = [labels for labels in tracked.states if labels not in vector]
        events = [self._gone(rule, tracked, labels, now) for labels in gone]
        for labels, value in vector.items():
            state = tracked.get(labels)
            if state is not None:
                events.append(self._step(rule, state, value, now))
        return [event for event in events if event is not None]

    def _gone(self, rule: Rule, tracked: _Tracked, labels: Labels, now: float) -> AlertEvent | None:
        """No value for a tracked label set: a firing one resolves, the others are forgotten."""
        state = tracked.states[labels]
        if state.state == "firing":
            state.value = None
            return self._fall(rule, state, now)
        del tracked.states[labels]
        return None

    def _step(self, rule: Rule, state: _State, value: float, now: float) -> AlertEvent | None:
        """Advance one label set's state with this pass's ``value``; the event to send, if any."""
        state.value = value
        if not rule.holds(value):
            return self._fall(rule, state, now)
        if state.state in ("inactive", "resolved"):
            state.state, state.since, state.active_since = "pending", now, now
        if state.state == "pending" and now - state.active_since >= rule.duration - EPSILON:
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
        if repeat is None or now - state.last_sent < repeat - EPSILON:
            return None
        state.last_sent, state.repeats = now, state.repeats + 1
        return self._event(rule, state)

    def _event(self, rule: Rule, state: _State) -> AlertEvent:
        repeat = state.repeats if state.state == "firing" else 0
        identity = (
            f"{self._instance}|{rule.name}|{state.labels!r}|{state.state}|{state.since!r}|{repeat}"
        )
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
            series=dict(state.labels),
            annotations=dict(rule.annotations),
        )

    async def _deliver(self, sink: AlertSink, events: list[AlertEvent]) -> None:
        """Send ``events`` to ``sink`` in order; a failure is logged and counted, not raised."""
        for event in events:
            if isinstance(sink, FilteredSink) and not sink.accepts(event):
                continue
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

    # -- running ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Evaluate now and then every ``interval`` on the running loop, until :meth:`aclose`.

        Started on a loop that has since closed, it starts again on this one.
        """
        task = self._task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return
        self._lock = None  # an asyncio.Lock of a dead loop must not be awaited here
        self._task = asyncio.get_running_loop().create_task(self._run(), name="overdrive-alerts")

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
            if task.get_loop() is asyncio.get_running_loop():  # another loop's task: cancel only
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
        for tracked in self._tracked.values():
            for state in tracked.states.values():
                counts[state.state] = counts.get(state.state, 0) + 1
        shown = "".join(f", {name}={count}" for name, count in sorted(counts.items()))
        dropped = sum(self.dropped.values())
        return (
            f"Alerts(rules={len(self._rules)}{shown}, dropped={dropped}, "
            f"interval={self._interval:g}s)"
        )


def _row(rule: Rule, state: _State) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "expression": rule.expression,
        "labels": dict(state.labels),
        "series": render(state.labels),
        "severity": rule.labels.get("severity"),
        "state": state.state,
        "value": state.value,
        "since": state.since,
    }


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


def _source_of(metrics: Registry | MetricSource) -> tuple[MetricSource, Registry | None]:
    """The source to read, and the registry to count notifications in (if it is one)."""
    if _is_source(metrics):
        return metrics, None
    registry = cast("Registry", metrics)  # TypeGuard does not narrow the else branch
    return MetricsSource(registry), registry


def _is_source(metrics: Registry | MetricSource) -> TypeGuard[MetricSource]:
    return callable(getattr(metrics, "sample", None))


def _guarded(read: Callable[[], T]) -> T | None:
    """``read()``, or None (no data) when the metric source fails: evaluation goes on."""
    try:
        return read()
    except Exception:
        logger.exception("alert evaluation could not read its metrics")
        return None
