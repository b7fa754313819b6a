"""Alert rules: expressions over metrics, a comparison, a threshold and a ``for`` duration.

A rule is written as a string or built from dataclasses::

    p95(overdrive_request_duration_seconds{op=chat}) > 3s for 1m
    ratio(overdrive_cache_hits_total, overdrive_cache_hits_total + overdrive_cache_misses_total)
        < 0.2
    rate(overdrive_upstream_rate_limited_total[5m])
        / rate(overdrive_upstream_requests_total[5m]) > 1%

Grammar (whitespace is free)::

    rule      := expr COMPARE threshold ["for" DURATION]
    COMPARE   := ">" | "<" | ">=" | "<="
    threshold := NUMBER [ "ms" | "s" | "m" | "h" | "d" | "%" ]
    expr      := term (("+" | "-") term)*
    term      := atom (("*" | "/") atom)*
    atom      := NUMBER | "(" expr ")" | selector | call
    call      := "value(" selector ")"
               | "rate(" selector ["[" DURATION "]"] ")"       per second, over 1m by default
               | "increase(" selector ["[" DURATION "]"] ")"   rise over the lookback
               | "p" DIGITS "(" selector ["[" DURATION "]"] ")" e.g. p95, p99, p999 = 99.9
               | "percentile(" NUMBER "," selector ["[" DURATION "]"] ")"
               | "ratio(" expr "," expr ")"                    no data when the divisor is 0
    selector  := NAME ["{" label "=" value ("," label "=" value)* "}"]

>>> rule = parse_rule("p95(latency_seconds{op=chat}) > 250ms for 1m")
>>> rule.threshold, rule.duration
(0.25, 60.0)
>>> str(rule.expr)
'p95(latency_seconds{op="chat"})'
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .._errors import ConfigError
from .._units import parse_duration

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
    "parse_rule",
]

Comparison: TypeAlias = Literal[">", "<", ">=", "<="]
DEFAULT_LOOKBACK = 60.0  # seconds a rate() or increase() looks back when not told


@dataclass(frozen=True, slots=True)
class Selector:
    """The series named ``name`` whose labels include ``labels`` (summed or merged)."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, name: str, **labels: str) -> Selector:
        """``Selector.of("hits_total", op="chat")``: labels as keywords."""
        return cls(name, tuple(sorted(labels.items())))

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
    """The current value of a counter (or gauge): the sum over matching series."""

    selector: Selector

    def __str__(self) -> str:
        return str(self.selector)


@dataclass(frozen=True, slots=True)
class Rate:
    """Per-second increase of a counter over the last ``window`` seconds."""

    selector: Selector
    window: float = DEFAULT_LOOKBACK

    def __str__(self) -> str:
        return f"rate({self.selector}[{_seconds(self.window)}])"


@dataclass(frozen=True, slots=True)
class Increase:
    """How much a counter rose over the last ``window`` seconds."""

    selector: Selector
    window: float = DEFAULT_LOOKBACK

    def __str__(self) -> str:
        return f"increase({self.selector}[{_seconds(self.window)}])"


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
            return f"p{self.q:g}({inner})"
        return f"percentile({self.q:g}, {inner})"


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

    ``labels`` travel with every notification (e.g. ``severity``);
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

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ConfigError("op", f"expected one of >, <, >=, <=, got {self.op!r}")
        if not math.isfinite(self.threshold):
            raise ConfigError("threshold", f"expected a finite number, got {self.threshold!r}")
        if self.duration < 0:
            raise ConfigError("for", f"expected a duration >= 0, got {self.duration!r}")
        if self.repeat_interval is not None and self.repeat_interval <= 0:
            raise ConfigError("repeat_interval", "expected a duration > 0 or None")
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
        return value is not None and _COMPARE[self.op](value, self.threshold)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def parse_rule(
    text: str,
    *,
    name: str = "",
    labels: Mapping[str, str] | None = None,
    repeat_interval: float | None = None,
    field: str = "rule",
) -> Rule:
    """Parse ``text`` into a :class:`Rule`; errors raise ``ConfigError(field, problem)``.

    >>> parse_rule("rate(errors_total) > 1%").threshold
    0.01
    >>> parse_rule("p95(x) > ")
    Traceback (most recent call last):
    ...
    overdrive._errors.ConfigError: config field `rule`: expected a number (e.g. 3s, ...
    """
    parser = _Parser(text, field)
    expr, op, threshold, duration = parser.rule()
    return Rule(
        expr,
        op,
        threshold,
        duration,
        name=name,
        labels=dict(labels or {}),
        repeat_interval=repeat_interval,
        text=" ".join(text.split()),
    )


# -- tokens -------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d+)?(?:ms|s|m|h|d|%)?(?![\w.]))
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<string>"[^"]*"|'[^']*')
    | (?P<op>>=|<=|[<>(){}\[\],=+\-*/])
    )""",
    re.VERBOSE,
)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "%": 0.01, "": 1.0}
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|%)?")
_PERCENTILE = re.compile(r"p(\d+)")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, name, string, op, end
    text: str
    column: int


def _tokens(text: str, field: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            column = len(text) - len(text[position:].lstrip())
            raise ConfigError(
                field, f"unexpected {text[column : column + 12]!r} at column {column}"
            )
        found.append(
            _Token(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup))
        )
        position = match.end()
    found.append(_Token("end", "", len(text)))
    return found


def _number(token: _Token) -> float:
    match = _NUMBER.fullmatch(token.text)
    assert match is not None  # the tokenizer only yields this shape
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def _seconds(seconds: float) -> str:
    return f"{seconds:g}s"


# -- recursive descent --------------------------------------------------------


class _Parser:
    """One pass over the tokens; every error names what was expected and where."""

    __slots__ = ("_at", "_field", "_text", "_tokens")

    def __init__(self, text: str, field: str) -> None:
        self._text = text
        self._field = field
        self._tokens = _tokens(text, field)
        self._at = 0

    def rule(self) -> tuple[Expr, Comparison, float, float]:
        expr = self.expr()
        op = self._comparison()
        threshold = _number(self._expect("number", "a number (e.g. 3s, 250ms, 1%, 0.2)"))
        duration = 0.0
        if self._peek().kind == "name" and self._peek().text == "for":
            self._take()
            duration = self._duration()
        self._expect("end", "the end of the rule (or `for <duration>`)")
        return expr, op, threshold, duration

    def expr(self) -> Expr:
        left = self._term()
        while self._peek().text in ("+", "-") and self._peek().kind == "op":
            op: Literal["+", "-"] = "+" if self._take().text == "+" else "-"
            left = BinaryOp(op, left, self._term())
        return left

    def _term(self) -> Expr:
        left = self._atom()
        while self._peek().text in ("*", "/") and self._peek().kind == "op":
            op: Literal["*", "/"] = "*" if self._take().text == "*" else "/"
            left = BinaryOp(op, left, self._atom())
        return left

    def _atom(self) -> Expr:
        token = self._peek()
        if token.kind == "number":
            return Number(_number(self._take()))
        if token.kind == "op" and token.text == "(":
            self._take()
            inner = self.expr()
            self._expect_op(")")
            return inner
        if token.kind != "name":
            raise self._error(
                "a metric name, a function such as rate(...) or p95(...), or a number"
            )
        if self._tokens[self._at + 1].text == "(":
            return self._call()
        return Value(self._selector())

    def _call(self) -> Expr:
        name = self._take().text
        self._expect_op("(")
        expr = self._call_body(name)
        self._expect_op(")")
        return expr

    def _call_body(self, name: str) -> Expr:
        if name == "value":
            return Value(self._selector())
        if name in ("rate", "increase"):
            selector, window = self._selector(), self._window()
            lookback = DEFAULT_LOOKBACK if window is None else window
            return Rate(selector, lookback) if name == "rate" else Increase(selector, lookback)
        if name == "ratio":
            left = self.expr()
            self._expect_op(",")
            return BinaryOp("/", left, self.expr())
        if name == "percentile":
            q = _number(self._expect("number", "a percentile between 0 and 100"))
            self._expect_op(",")
            return self._percentile(q)
        short = _PERCENTILE.fullmatch(name)
        if short is not None:
            digits = short.group(1)
            # p95 -> 95, p999 -> 99.9, p9999 -> 99.99: Prometheus-style shorthands.
            return self._percentile(
                float(digits[:2] + "." + digits[2:]) if len(digits) > 2 else float(digits)
            )
        raise self._error(
            "a function: value, rate, increase, ratio, percentile or pNN", at=self._at - 2
        )

    def _percentile(self, q: float) -> Percentile:
        if not 0 <= q <= 100:
            raise self._error(f"a percentile between 0 and 100 (got {q:g})", at=self._at - 1)
        return Percentile(q, self._selector(), self._window())

    def _selector(self) -> Selector:
        name = self._expect("name", "a metric name").text
        labels: dict[str, str] = {}
        if self._peek().text == "{":
            self._take()
            while self._peek().text != "}":
                key = self._expect("name", "a label name").text
                self._expect_op("=")
                labels[key] = self._label_value()
                if self._peek().text != "}":
                    self._expect_op(",")
            self._take()
        return Selector(name, tuple(sorted(labels.items())))

    def _label_value(self) -> str:
        token = self._peek()
        if token.kind not in ("name", "string", "number"):
            raise self._error("a label value (a word, a number or a quoted string)")
        self._take()
        return token.text[1:-1] if token.kind == "string" else token.text

    def _window(self) -> float | None:
        if self._peek().text != "[":
            return None
        self._take()
        window = self._duration()
        self._expect_op("]")
        if window <= 0:
            raise self._error("a lookback window > 0", at=self._at - 2)
        return window

    def _duration(self) -> float:
        token = self._expect("number", "a duration (e.g. 30s, 1m, 250ms)")
        if token.text.endswith("%"):
            raise self._error("a duration (e.g. 30s, 1m, 250ms), not a percentage", at=self._at - 1)
        return parse_duration(token.text)

    def _comparison(self) -> Comparison:
        token = self._peek()
        if token.kind == "op" and token.text in _COMPARE:
            self._take()
            return token.text  # type: ignore[return-value]  # checked against _COMPARE
        raise self._error("a comparison (>, <, >=, <=)")

    # -- token helpers ---------------------------------------------------------

    def _peek(self) -> _Token:
        return self._tokens[self._at]

    def _take(self) -> _Token:
        token = self._tokens[self._at]
        self._at = min(self._at + 1, len(self._tokens) - 1)
        return token

    def _expect(self, kind: str, what: str) -> _Token:
        if self._peek().kind != kind:
            raise self._error(what)
        return self._take()

    def _expect_op(self, op: str) -> None:
        token = self._peek()
        if token.kind != "op" or token.text != op:
            raise self._error(f"`{op}`")
        self._take()

    def _error(self, what: str, at: int | None = None) -> ConfigError:
        token = self._tokens[self._at if at is None else max(at, 0)]
        where = (
            "at the end"
            if token.kind == "end"
            else f"at column {token.column} (found {token.text!r})"
        )
        return ConfigError(self._field, f"expected {what} {where} of {self._text!r}")
