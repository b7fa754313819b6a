"""The string form of alert rules, parsed into :mod:`._alert_rules` dataclasses.

Grammar (whitespace is free)::

    rule      := expr COMPARE threshold ["for" DURATION]
    COMPARE   := ">" | "<" | ">=" | "<="
    threshold := NUMBER [ "ms" | "s" | "m" | "h" | "d" | "%" ]
    expr      := term (("+" | "-") term)*
    term      := atom (("*" | "/") atom)*
    atom      := NUMBER | "(" expr ")" | (selector | call) [grouping]
    grouping  := "by" "(" [NAME ("," NAME)*] ")"             sum/merge down to these labels
    call      := "value(" selector ")"
               | "rate(" selector ["[" DURATION "]"] ")"       per second, over 1m by default
               | "increase(" selector ["[" DURATION "]"] ")"   rise over the lookback
               | "p" DIGITS "(" selector ["[" DURATION "]"] ")" e.g. p95, p99, p999 = 99.9
               | "percentile(" NUMBER "," selector ["[" DURATION "]"] ")"
               | "ratio(" expr "," expr ")"                    no data when the divisor is 0
    selector  := NAME ["{" label "=" value ("," label "=" value)* "}"]

Each expression is judged per label set (see ``_alerts``): ``grouping``
applies to the selector of a ``value``, ``rate``, ``increase`` or percentile.

>>> rule = parse_rule("p95(latency_seconds{op=chat}) > 250ms for 1m")
>>> rule.threshold, rule.duration
(0.25, 60.0)
>>> str(rule.expr)
'p95(latency_seconds{op="chat"})'
>>> str(parse_rule("rate(errors_total[5m]) by (op, model) > 1").expr)
'rate(errors_total[300s]) by (model, op)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast

from .._errors import ConfigError
from .._units import parse_duration
from ._alert_rules import (
    COMPARE,
    DEFAULT_LOOKBACK,
    BinaryOp,
    Comparison,
    Expr,
    Increase,
    Number,
    Percentile,
    Rate,
    Rule,
    Selector,
    Value,
)

__all__ = ["parse_rule"]


def parse_rule(
    text: str,
    *,
    name: str = "",
    labels: Mapping[str, str] | None = None,
    repeat_interval: float | None = None,
    field: str = "rule",
    annotations: Mapping[str, str] | None = None,
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
        annotations=dict(annotations or {}),
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
        at = self._at
        expr = self._call() if self._tokens[at + 1].text == "(" else Value(self._selector())
        return self._grouped(expr, at)

    def _grouped(self, expr: Expr, at: int) -> Expr:
        """``expr by (labels)``: the grouping lands on the selector ``expr`` reads."""
        token = self._peek()
        if token.kind != "name" or token.text != "by":
            return expr
        if isinstance(expr, Number | BinaryOp):  # ratio(a, b) by (...): which selector?
            raise self._error("`by (...)` after value, rate, increase or a percentile", at=at)
        self._take()
        self._expect_op("(")
        names: list[str] = []
        while self._peek().text != ")":
            names.append(self._expect("name", "a label name").text)
            if self._peek().text != ")":
                self._expect_op(",")
        self._take()
        by = tuple(sorted(set(names)))
        return replace(expr, selector=replace(expr.selector, by=by))

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
            # p95 -> 95, p999 -> 99.9, p9999 -> 99.99: Prometheus-style shorthands (p100: max).
            nines = len(digits) > 2 and digits != "100"
            return self._percentile(
                float(digits[:2] + "." + digits[2:]) if nines else float(digits)
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
        if token.kind == "op" and token.text in COMPARE:
            self._take()
            return cast("Comparison", token.text)  # checked against COMPARE
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
