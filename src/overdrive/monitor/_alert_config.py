"""``[alerts]`` in ``overdrive.toml``: rules and sinks, checked at load, built by the engine.

::

    [alerts]
    interval = "15s"            # how often every rule is judged
    repeat_interval = "1h"      # reminders of a firing alert (a rule may set its own)
    max_series = 1000           # label sets tracked per rule

    [[alerts.rules]]
    name = "chat-slow"
    rule = "p95(overdrive_request_duration_seconds{op=chat}) > 3s"
    for = "1m"                  # or `... for 1m` in the rule itself
    severity = "page"
    labels = { team = "agents" }
    summary = "chat p95 over 3s"

    [[alerts.sinks]]
    type = "webhook"            # or "log"
    url = "https://hooks.example/alerts"
    headers_env = { authorization = "ALERT_HOOK_AUTH" }   # secrets from the environment
    severities = ["page"]       # and/or rules = ["chat-slow"]; empty: everything

A mistake is a :class:`~overdrive.ConfigError` naming the field, e.g.
``alerts.rules[2].rule: expected a comparison ... at column 7``.

>>> from overdrive.monitor import Metrics
>>> alerts = AlertsConfig.model_validate(
...     {"rules": [{"name": "slow", "rule": "p95(x_seconds) > 3s", "for": "1m"}]})
>>> build_alerts(alerts, Metrics()).rules[0].expression
'p95(x_seconds) > 3s for 60s'
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from .._clock import Clock
from .._errors import ConfigError
from .._section import _Section
from .._units import parse_duration
from ._alert_parse import parse_rule
from ._alert_rules import Rule
from ._alert_sinks import AlertSink, FilteredSink, LogSink, WebhookSink
from ._alert_source import Registry
from ._alerts import MAX_SERIES, Alerts

__all__ = ["AlertRuleConfig", "AlertSinkConfig", "AlertsConfig", "build_alerts"]

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class AlertRuleConfig(_Section):
    """One ``[[alerts.rules]]`` entry: a named rule string and what travels with its alerts."""

    name: str = Field(min_length=1)
    # The expression, e.g. "rate(overdrive_upstream_errors_total[5m]) by (upstream) > 1".
    rule: str = Field(min_length=1)
    # How long it must hold before firing, when the rule string has no `for`.
    for_: Seconds | None = Field(default=None, alias="for")
    severity: str | None = Field(default=None, min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""
    # Reminders of a firing alert; unset: [alerts] repeat_interval.
    repeat_interval: Seconds | None = Field(default=None, gt=0)

    def build(self, index: int, default_repeat: float | None) -> Rule:
        """This entry as a :class:`Rule`; ``index`` names it in errors."""
        where = f"alerts.rules[{index}]"
        labels = dict(self.labels)
        if self.severity is not None:
            labels["severity"] = self.severity
        annotations = {"summary": self.summary, "description": self.description}
        rule = parse_rule(
            self.rule,
            name=self.name,
            labels=labels,
            repeat_interval=self.repeat_interval or default_repeat,
            field=f"{where}.rule",
            annotations={key: text for key, text in annotations.items() if text},
        )
        return rule if self.for_ is None else _with_for(rule, self.for_, where)


def _with_for(rule: Rule, seconds: float, where: str) -> Rule:
    if rule.duration:
        raise ConfigError(f"{where}.for", "the rule string already says `for`; give it once")
    return Rule(
        rule.expr,
        rule.op,
        rule.threshold,
        seconds,
        name=rule.name,
        labels=rule.labels,
        repeat_interval=rule.repeat_interval,
        text=f"{rule.text} for {seconds:g}s",
        annotations=rule.annotations,
    )


class AlertSinkConfig(_Section):
    """One ``[[alerts.sinks]]`` entry: where transitions go, and which of them."""

    type: Literal["log", "webhook"]
    url: str | None = None  # webhook only: http:// or https://
    headers: dict[str, str] = Field(default_factory=dict)
    # Header name -> environment variable holding its value (an auth token, say).
    headers_env: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds = Field(default=5.0, gt=0)
    attempts: int = Field(default=4, ge=1, le=20)
    # Only these rules (by name) and severities; empty: every one.
    rules: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)

    def build(self) -> AlertSink:
        sink: AlertSink = LogSink()
        if self.type == "webhook":
            assert self.url is not None  # checked at load
            secrets = {name: os.environ.get(env, "") for name, env in self.headers_env.items()}
            sink = WebhookSink(
                self.url,
                headers={**self.headers, **secrets},
                timeout=self.timeout,
                attempts=self.attempts,
            )
        if self.rules or self.severities:
            return FilteredSink(sink, rules=self.rules, severities=self.severities)
        return sink

    def check(self, where: str, rules: set[str]) -> None:
        """The checks that need the entry's place: its index and the rules beside it."""
        if self.type == "webhook" and not self.url:
            raise ConfigError(f"{where}.url", "a webhook sink needs a url")
        if self.url and self.type != "webhook":
            raise ConfigError(f"{where}.url", f"a {self.type} sink takes no url")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}.url", f"expected an http:// or https:// URL, got {self.url!r}"
            )
        for index, name in enumerate(self.rules):
            if name not in rules:
                raise ConfigError(f"{where}.rules[{index}]", f"no rule is named {name!r}")
        for name, env in self.headers_env.items():
            if not os.environ.get(env):
                problem = f"environment variable {env!r} is not set"
                raise ConfigError(f"{where}.headers_env.{name}", problem)


class AlertsConfig(_Section):
    """``[alerts]``: rules judged every ``interval`` per label set, sent to ``sinks``.

    With rules and no sinks, alerts go to the ``overdrive.alerts`` log.
    """

    enabled: bool = True
    interval: Seconds = Field(default=15.0, gt=0)
    repeat_interval: Seconds | None = Field(default=None, gt=0)
    max_series: int = Field(default=MAX_SERIES, ge=1, le=100_000)
    rules: list[AlertRuleConfig] = Field(default_factory=list)
    sinks: list[AlertSinkConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> AlertsConfig:
        names: set[str] = set()
        for index, entry in enumerate(self.rules):
            if entry.name in names:
                raise ConfigError(f"alerts.rules[{index}].name", f"duplicate name {entry.name!r}")
            names.add(entry.name)
            _check_labels(entry, index)
            entry.build(index, self.repeat_interval)  # parse errors name alerts.rules[i].rule
        for index, sink in enumerate(self.sinks):
            sink.check(f"alerts.sinks[{index}]", names)
        return self

    def built_rules(self) -> list[Rule]:
        return [entry.build(i, self.repeat_interval) for i, entry in enumerate(self.rules)]


def _check_labels(entry: AlertRuleConfig, index: int) -> None:
    for name in entry.labels:
        if not _LABEL.fullmatch(name):
            where = f"alerts.rules[{index}].labels.{name}"
            raise ConfigError(where, "a label name must match [A-Za-z_][A-Za-z0-9_]*")
    if entry.severity is not None and "severity" in entry.labels:
        where = f"alerts.rules[{index}].severity"
        raise ConfigError(where, "give severity or labels.severity, not both")


def build_alerts(
    config: AlertsConfig, metrics: Registry, clock: Clock | None = None
) -> Alerts | None:
    """The :class:`Alerts` ``[alerts]`` describes over ``metrics``; None when off or empty.

    The caller starts it (``alerts.start()`` on its loop) and closes it.
    """
    if not config.enabled or not config.rules:
        return None
    sinks = [sink.build() for sink in config.sinks] or [LogSink()]
    return Alerts(
        metrics,
        config.built_rules(),
        sinks,
        clock=clock,
        interval=config.interval,
        max_series=config.max_series,
    )
