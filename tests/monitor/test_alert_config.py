"""``[alerts]`` from TOML: the shape, each mistake naming its field, sinks built and delivering."""

from __future__ import annotations

import logging
import tomllib

import pytest

from overdrive import ConfigError, load_config
from overdrive.monitor import (
    AlertEvent,
    AlertsConfig,
    FilteredSink,
    LogSink,
    Metrics,
    WebhookSink,
    build_alerts,
)
from overdrive.testing import FakeClock

from .webhook_receiver import WebhookReceiver

UPSTREAM = """
[[upstreams]]
name = "a"
base_url = "http://127.0.0.1:1/v1"
models = ["m"]
"""

FULL = """
[alerts]
interval = "10s"
repeat_interval = "1h"
max_series = 200

[[alerts.rules]]
name = "chat-slow"
rule = "p95(overdrive_request_duration_seconds{op=chat}) > 3s"
for = "1m"
severity = "page"
labels = { team = "agents" }
summary = "chat p95 over 3s"
description = "see the runbook"

[[alerts.rules]]
name = "errors"
rule = "rate(overdrive_upstream_errors_total[5m]) by (upstream) > 1 for 30s"
repeat_interval = "10m"

[[alerts.sinks]]
type = "log"

[[alerts.sinks]]
type = "webhook"
url = "https://hooks.example/alerts"
headers = { "x-team" = "agents" }
headers_env = { authorization = "OD_TEST_HOOK_AUTH" }
timeout = "2s"
severities = ["page"]
"""


def alerts_of(text: str) -> AlertsConfig:
    return load_config(tomllib.loads(UPSTREAM + text)).alerts


def test_the_full_shape_loads_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OD_TEST_HOOK_AUTH", "Bearer s3cret")
    config = alerts_of(FULL)
    assert (config.interval, config.repeat_interval, config.max_series) == (10.0, 3600.0, 200)
    alerts = build_alerts(config, Metrics())
    assert alerts is not None
    assert alerts.interval == 10.0
    slow, errors = alerts.rules
    assert (slow.name, slow.duration, slow.repeat_interval) == ("chat-slow", 60.0, 3600.0)
    assert slow.labels == {"team": "agents", "severity": "page"}
    assert slow.annotations == {"summary": "chat p95 over 3s", "description": "see the runbook"}
    assert slow.expression == "p95(overdrive_request_duration_seconds{op=chat}) > 3s for 60s"
    assert (errors.duration, errors.repeat_interval, errors.labels) == (30.0, 600.0, {})
    log, hook = alerts._sinks
    assert isinstance(log, LogSink)
    assert isinstance(hook, FilteredSink)
    assert isinstance(hook.sink, WebhookSink)
    assert hook.sink._headers["authorization"] == "Bearer s3cret"  # read from the environment


def test_no_rules_or_disabled_builds_nothing() -> None:
    assert load_config(tomllib.loads(UPSTREAM)).alerts.rules == []
    assert build_alerts(alerts_of(""), Metrics()) is None
    off = alerts_of('[alerts]\nenabled = false\n[[alerts.rules]]\nname = "x"\nrule = "x > 1"\n')
    assert build_alerts(off, Metrics()) is None


def test_rules_without_sinks_go_to_the_log() -> None:
    alerts = build_alerts(alerts_of('[[alerts.rules]]\nname = "x"\nrule = "x > 1"\n'), Metrics())
    assert alerts is not None
    assert [type(sink) for sink in alerts._sinks] == [LogSink]


RULE = '[[alerts.rules]]\nname = "{name}"\nrule = "{rule}"\n'


def rules(*entries: tuple[str, str], extra: str = "") -> str:
    return "".join(RULE.format(name=name, rule=rule) for name, rule in entries) + extra


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            rules(("a", "x > 1"), ("b", "x > 1"), ("c", "p95(x) == 3")),
            "alerts.rules[2].rule",
            "expected a comparison (>, <, >=, <=) at column 7 (found '=')",
        ),
        (rules(("a", "x > 1"), ("a", "y > 1")), "alerts.rules[1].name", "duplicate name 'a'"),
        (rules(("a", "x > 1 for 1m"), extra='for = "2m"\n'), "alerts.rules[0].for", "once"),
        (rules(("a", "x > 1"), extra='for = "soon"\n'), "alerts.rules[0].for", "duration"),
        (rules(("a", "x > 1"), extra="surprise = 1\n"), "alerts.rules[0].surprise", "Extra"),
        (
            rules(("a", "x > 1"), extra='repeat_interval = "0s"\n'),
            "alerts.rules[0].repeat_interval",
            "greater than 0",
        ),
        (
            rules(("a", "x > 1"), extra='severity = "page"\nlabels = { severity = "x" }\n'),
            "alerts.rules[0].severity",
            "not both",
        ),
        (
            rules(("a", "x > 1"), extra='labels = { "bad-name" = "x" }\n'),
            "alerts.rules[0].labels.bad-name",
            "label name",
        ),
        ('[[alerts.rules]]\nname = "a"\n', "alerts.rules[0].rule", "required"),
        ('[alerts]\ninterval = "0s"\n', "alerts.interval", "greater than 0"),
        ("[alerts]\nmax_series = 0\n", "alerts.max_series", "greater than or equal to 1"),
        ('[[alerts.sinks]]\ntype = "pager"\n', "alerts.sinks[0].type", "'log' or 'webhook'"),
        (
            '[[alerts.sinks]]\ntype = "log"\n[[alerts.sinks]]\ntype = "webhook"\n',
            "alerts.sinks[1].url",
            "needs a url",
        ),
        ('[[alerts.sinks]]\ntype = "webhook"\nurl = "ftp://x"\n', "alerts.sinks[0].url", "http://"),
        (
            '[[alerts.sinks]]\ntype = "log"\nurl = "http://x"\n',
            "alerts.sinks[0].url",
            "takes no url",
        ),
        (
            rules(("a", "x > 1"), extra='[[alerts.sinks]]\ntype = "log"\nrules = ["a", "b"]\n'),
            "alerts.sinks[0].rules[1]",
            "no rule is named 'b'",
        ),
        (
            '[[alerts.sinks]]\ntype = "webhook"\nurl = "http://x"\n'
            'headers_env = { authorization = "OD_TEST_UNSET_VAR" }\n',
            "alerts.sinks[0].headers_env.authorization",
            "'OD_TEST_UNSET_VAR' is not set",
        ),
    ],
)
def test_each_mistake_names_its_field(text: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        alerts_of(text)
    assert caught.value.field == field
    assert words in caught.value.problem


def sent(text: str, *events: tuple[str, str]) -> list[str]:
    """The rules of ``events`` (rule, severity) a sink built from ``text`` accepts."""
    sink = alerts_of(rules(("a", "x > 1"), ("b", "y > 1")) + text).sinks[0].build()
    accepted = []
    for rule, severity in events:
        event = AlertEvent(rule, "x", "firing", 1.0, 1.0, 0.0, 0.0, "k", {"severity": severity})
        if not isinstance(sink, FilteredSink) or sink.accepts(event):
            accepted.append(f"{rule}/{severity}")
    return accepted


def test_sinks_receive_the_rules_and_severities_they_name() -> None:
    everything = [("a", "page"), ("b", "page"), ("b", "info")]
    assert sent('[[alerts.sinks]]\ntype = "log"\n', *everything) == ["a/page", "b/page", "b/info"]
    only_b = '[[alerts.sinks]]\ntype = "log"\nrules = ["b"]\n'
    assert sent(only_b, *everything) == ["b/page", "b/info"]
    pages = '[[alerts.sinks]]\ntype = "log"\nseverities = ["page"]\nrules = ["b"]\n'
    assert sent(pages, *everything) == ["b/page"]


async def test_a_webhook_from_config_delivers_to_a_real_server(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics(clock)
    with WebhookReceiver() as receiver:
        text = rules(("errors", "errors_total > 2"), extra='labels = { team = "agents" }\n')
        text += rules(("calm", "errors_total > 100"))
        text += f'[[alerts.sinks]]\ntype = "webhook"\nurl = "{receiver.url}"\nrules = ["errors"]\n'
        text += '[[alerts.sinks]]\ntype = "log"\nrules = ["calm"]\n'
        alerts = build_alerts(alerts_of(text), metrics, clock)
        assert alerts is not None
        metrics.counter("errors_total", upstream="a").inc(5)
        metrics.counter("errors_total", upstream="b").inc(1)
        caplog.set_level(logging.INFO, logger="overdrive.alerts")
        [event] = await alerts.evaluate()
        await alerts.aclose()
    [payload] = receiver.accepted.values()
    assert (payload["rule"], payload["state"], payload["value"]) == ("errors", "firing", 5)
    assert (payload["series"], payload["labels"]) == ({"upstream": "a"}, {"team": "agents"})
    assert payload["idempotency_key"] == event.key
    assert caplog.records == []  # the log sink takes only `calm`, which did not fire
    delivered = metrics.value("overdrive_alert_notifications_total", outcome="delivered")
    assert delivered == 1  # the filtered-out log sink is not counted as a delivery


def test_the_section_base_moved_and_config_still_uses_it() -> None:
    from overdrive import config
    from overdrive._section import _Section

    assert issubclass(config.Config, _Section)
    assert issubclass(AlertsConfig, _Section)
    assert not hasattr(config, "BaseModel")  # config.py defines no base of its own any more
