"""Alert rules: expressions over metrics, a comparison, a threshold and a ``for`` duration.

A rule is written as a string or built from dataclasses::

    p95(overdrive_request_duration_seconds{op=chat}) > 3s for 1m
    ratio(overdrive_cache_hits_total, overdrive_cache_hits_total + overdrive_cache_misses_total)
        < 0.2
    rate(overdrive_upstream_rate_limited_total[5m])
        / rate(overdrive_upstream_requests_total[5m]) > 1%

:func:`~overdrive.monitor.parse_rule` (in ``_alert_parse``, with the grammar)
reads the string form into these dataclasses. Each expression is judged per
label set of the series it reads (``_alert_vector``, ``_alerts``; docs/alerts.md).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .._errors import ConfigError
from .._validate import check_duration, check_float

__all__ = [
    "BinaryOp",
    "Comparison",
    "Expr",
    "Increase",
    "Number",
    "Percentile",
    "Rate",
    "Rule",
    "Selector",
    "Value",
]

Comparison: TypeAlias = Literal[">", "<", ">=", "<="]
DEFAULT_LOOKBACK = 60.0  # seconds a rate() or increase() looks back when not told


@dataclass(frozen=True, slots=True)
class Selector:
    """The series named ``name`` whose labels include ``labels``, one value per label set.

    ``by`` (``rate(x_total) by (op)``) sums counters, and merges histograms,
    down to those labels first: one value per distinct ``op``; ``by ()``
    gives one value for everything matched. ``None`` keeps every series apart.

    >>> Selector.of("x_total", op="chat").group((("model", "m"), ("op", "chat")))
    (('model', 'm'), ('op', 'chat'))
    >>> Selector("x_total", by=("op",)).group((("model", "m"), ("op", "chat")))
    (('op', 'chat'),)
    """

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    by: tuple[str, ...] | None = None

    @classmethod
    def of(cls, name: str, **labels: str) -> Selector:
        """``Selector.of("hits_total", op="chat")``: labels as keywords."""
        return cls(name, tuple(sorted(labels.items())))

    def matches(self, labels: tuple[tuple[str, str], ...]) -> bool:
        """Whether a series with ``labels`` (sorted pairs) is one this selects."""
        return set(self.labels) <= set(labels)

    def group(self, labels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """The label set a series with ``labels`` counts towards (``by`` applied)."""
        if self.by is None:
            return labels
        return tuple(pair for pair in labels if pair[0] in self.by)

    @property
    def grouping(self) -> str:
        """`` by (a, b)`` as written after the function, or ``""`` without ``by``."""
        return "" if self.by is None else f" by ({', '.join(self.by)})"

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        inner = ", ".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.name}{{{inner}}}"


@dataclass(frozen=True, slots=True)
class Number:
    """A constant."""

    value: float

    def __str__(self) -> str:
        return f"{self.value:g}"


@dataclass(frozen=True, slots=True)
class Value:
    """The current value of each matching counter or gauge series."""

    selector: Selector

    def __str__(self) -> str:
        return f"{self.selector}{self.selector.grouping}"


@dataclass(frozen=True, slots=True)
class Rate:
    """Per-second increase of a counter over the last ``window`` seconds."""

    selector: Selector
    window: float = DEFAULT_LOOKBACK

    def __str__(self) -> str:
        return f"rate({self.selector}[{_seconds(self.window)}]){self.selector.grouping}"


@dataclass(frozen=True, slots=True)
class Increase:
    """How much a counter rose over the last ``window`` seconds."""

    selector: Selector
    window: float = DEFAULT_LOOKBACK

    def __str__(self) -> str:
        return f"increase({self.selector}[{_seconds(self.window)}]){self.selector.grouping}"


@dataclass(frozen=True, slots=True)
class Percentile:
    """The ``q``-th percentile (0-100) of a histogram; ``window`` is a lookback hint."""

    q: float
    selector: Selector
    window: float | None = None

    def __str__(self) -> str:
        inner = str(self.selector)
        if self.window is not None:
            inner += f"[{_seconds(self.window)}]"
        if self.q == int(self.q):
            return f"p{self.q:g}({inner}){self.selector.grouping}"
        return f"percentile({self.q:g}, {inner}){self.selector.grouping}"


@dataclass(frozen=True, slots=True)
class BinaryOp:
    """``left op right``; ``ratio(a, b)`` is ``BinaryOp("/", a, b)``."""

    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


Expr: TypeAlias = Number | Value | Rate | Increase | Percentile | BinaryOp


@dataclass(frozen=True, slots=True)
class Rule:
    """Alert when ``expr op threshold`` has held for ``duration`` seconds.

    >>> rule = Rule(Percentile(95, Selector.of("latency_seconds")), ">", 3.0, duration=60)
    >>> rule.name
    'p95(latency_seconds) > 3 for 60s'
    >>> rule.holds(3.5), rule.holds(None)
    (True, False)

    ``labels`` travel with every notification (e.g. ``severity``), and so do
    ``annotations`` (``summary``, ``description``: text for humans);
    ``repeat_interval`` re-sends a firing alert that often (off when None).
    """

    expr: Expr
    op: Comparison
    threshold: float
    duration: float = 0.0
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    repeat_interval: float | None = None
    text: str = ""  # the source string when parsed; rendered from expr otherwise
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op not in COMPARE:
            raise ConfigError("op", f"expected one of >, <, >=, <=, got {self.op!r}")
        check_float("threshold", self.threshold, finite=True)
        check_duration("for", self.duration)
        if self.repeat_interval is not None:
            check_duration("repeat_interval", self.repeat_interval, positive=True)
        if not self.name:
            object.__setattr__(self, "name", self.expression)

    @property
    def expression(self) -> str:
        """The rule as text, e.g. ``p95(x) > 3s for 1m``."""
        if self.text:
            return self.text
        tail = f" for {_seconds(self.duration)}" if self.duration else ""
        return f"{self.expr} {self.op} {self.threshold:g}{tail}"

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` meets the condition; no data (None) never does."""
        return value is not None and COMPARE[self.op](value, self.threshold)


COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _seconds(seconds: float) -> str:
    return f"{seconds:g}s"
