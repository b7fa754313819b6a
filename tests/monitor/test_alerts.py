from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import httpx
import pytest

from overdrive import ConfigError
from overdrive.monitor import Metrics
from overdrive.monitor._alert_parse import parse_rule
from overdrive.monitor._alert_rules import (
    BinaryOp,
    Increase,
    Number,
    Percentile,
    Rate,
    Rule,
    Selector,
    Value,
)
from overdrive.monitor._alert_sinks import AlertEvent, CallbackSink, LogSink, WebhookSink
from overdrive.monitor._alerts import Alerts, MetricsSource
from overdrive.testing import FakeClock

from .webhook_receiver import WebhookReceiver

CHAT_P95 = "p95(overdrive_request_duration_seconds{op=chat}) > 3s for 1m"
HIT_RATIO = (
    "ratio(overdrive_cache_hits_total, overdrive_cache_misses_total + overdrive_cache_hits_total)"
    " < 0.2"
)
LIMITED = (
    "rate(overdrive_upstream_rate_limited_total) / rate(overdrive_upstream_requests_total) > 1%"
)


# -- parsing --------------------------------------------------------------------


def test_parses_the_issue_examples() -> None:
    p95 = parse_rule(CHAT_P95)
    assert p95.expr == Percentile(95, Selector.of("overdrive_request_duration_seconds", op="chat"))
    assert (p95.op, p95.threshold, p95.duration) == (">", 3.0, 60.0)
    assert p95.name == CHAT_P95

    hits, misses = (
        Selector.of("overdrive_cache_hits_total"),
        Selector.of("overdrive_cache_misses_total"),
    )
    ratio = parse_rule(HIT_RATIO)
    assert ratio.expr == BinaryOp("/", Value(hits), BinaryOp("+", Value(misses), Value(hits)))
    assert (ratio.op, ratio.threshold, ratio.duration) == ("<", 0.2, 0.0)

    limited = parse_rule(LIMITED)
    assert limited.expr == BinaryOp(
        "/",
        Rate(Selector.of("overdrive_upstream_rate_limited_total"), 60.0),
        Rate(Selector.of("overdrive_upstream_requests_total"), 60.0),
    )
    assert limited.threshold == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("text", "threshold"),
    [("x > 3s", 3.0), ("x > 250ms", 0.25), ("x > 1%", 0.01), ("x > 12", 12.0), ("x > 2m", 120.0)],
)
def test_threshold_units(text: str, threshold: float) -> None:
    assert parse_rule(text).threshold == pytest.approx(threshold)


def test_every_expression_kind() -> None:
    sel = Selector.of("x_total", op="chat", status="429")
    assert parse_rule('value(x_total{op="chat", status=429}) >= 1').expr == Value(sel)
    assert parse_rule("rate(x_total{op=chat,status='429'}[5m]) <= 1").expr == Rate(sel, 300.0)
    assert parse_rule("increase(x_total{op=chat, status=429}[30s]) > 1").expr == Increase(sel, 30)
    assert parse_rule("p999(h) > 1").expr == Percentile(99.9, Selector.of("h"))
    assert parse_rule("percentile(50, h[2m]) > 1").expr == Percentile(50, Selector.of("h"), 120)
    assert parse_rule("(a + b) * 2 - 1 > 0").expr == BinaryOp(
        "-",
        BinaryOp("*", BinaryOp("+", Value(Selector("a")), Value(Selector("b"))), Number(2)),
        Number(1),
    )


def test_rendered_expression_parses_back() -> None:
    rule = Rule(Percentile(99, Selector.of("h", op="chat"), 30), ">", 0.5, duration=60)
    again = parse_rule(rule.expression)
    assert (again.expr, again.threshold, again.duration) == (rule.expr, 0.5, 60.0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected a metric name"),
        ("p95(x)", "expected a comparison (>, <, >=, <=) at the end"),
        ("p95(x) > ", "expected a number (e.g. 3s, 250ms, 1%, 0.2) at the end"),
        ("p95(x) == 3", "expected a comparison (>, <, >=, <=) at column 7 (found '=')"),
        ("p95(x) > 3 for", "expected a duration (e.g. 30s, 1m, 250ms) at the end"),
        ("p95(x) > 3 for 5%", "not a percentage"),
        ("p95(x) > 3 during 1m", "expected the end of the rule (or `for <duration>`)"),
        ("p95(x > 3", "expected `)` at column 6 (found '>')"),
        ("avg(x) > 3", "expected a function: value, rate, increase, ratio, percentile or pNN"),
        ("percentile(101, x) > 3", "a percentile between 0 and 100 (got 101)"),
        ("rate(x[0s]) > 3", "a lookback window > 0"),
        ("x{op} > 3", "expected `=`"),
        ("x > 3 for 5min", "unexpected '5min'"),
    ],
)
def test_parse_errors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rule(text, field="alerts[2].rule")
    assert caught.value.field == "alerts[2].rule"
    assert problem in caught.value.problem


def test_rule_dataclass_validates() -> None:
    with pytest.raises(ConfigError, match="for"):
        Rule(Value(Selector("x")), ">", 1, duration=-1)
    with pytest.raises(ConfigError, match="op"):
        Rule(Value(Selector("x")), "!=", 1)  # type: ignore[arg-type]


def test_duplicate_rule_names_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ConfigError) as caught:
        Alerts(Metrics(clock), ["x > 1", "x > 1"], clock=clock)
    assert caught.value.field == "alerts[1].name"


# -- reading metrics --------------------------------------------------------------


async def values(alerts: Alerts) -> dict[str, Any]:
    """Each rule's value after one pass (rules here read one label set, or none)."""
    await alerts.evaluate()
    return {status["rule"]: status["value"] for status in alerts.status()}


async def test_value_ratio_per_label_set_and_no_data(clock: FakeClock) -> None:
    metrics = Metrics(clock)
    chat_hits = "overdrive_cache_hits_total{op=chat} > 0"
    alerts = Alerts(metrics, [HIT_RATIO, chat_hits], clock=clock)
    assert await values(alerts) == {HIT_RATIO: None, chat_hits: None}  # no series: no data
    metrics.counter("overdrive_cache_hits_total", op="chat").inc(1)
    metrics.counter("overdrive_cache_hits_total", op="embeddings").inc(1)
    metrics.counter("overdrive_cache_misses_total", op="chat").inc(8)
    await alerts.evaluate()
    seen = {(row["rule"], row["series"]): row["value"] for row in alerts.status()}
    # embeddings has hits but no misses series: `misses + hits` has no partner for it.
    assert seen == {
        (HIT_RATIO, '{op="chat"}'): pytest.approx(1 / 9),
        (chat_hits, '{op="chat"}'): 1,
    }


async def test_rates_over_the_lookback(clock: FakeClock) -> None:
    metrics = Metrics(clock)
    requests = metrics.counter("overdrive_upstream_requests_total", upstream="a")
    limited = metrics.counter("overdrive_upstream_rate_limited_total", upstream="a")
    increase = "increase(overdrive_upstream_requests_total[30s]) > 0"
    alerts = Alerts(metrics, [LIMITED, increase], clock=clock)
    requests.inc(100)
    assert (await values(alerts))[LIMITED] is None
    for second in (15, 30, 45, 60, 75):
        clock.advance(15)
        requests.inc(150)
        limited.inc(3 if second > 30 else 0)
        seen = await values(alerts)
    # Over the last 60s (4 steps): 9 limited of 600 requests.
    assert seen[LIMITED] == pytest.approx(9 / 600)
    assert seen[increase] == 300  # two steps of 150 within 30s


async def test_counter_restart_counts_as_a_rise(clock: FakeClock) -> None:
    readings = iter([10.0, 20.0, 5.0])

    class Source:
        def sample(self, selector: Selector) -> float | None:
            return next(readings)

        def percentile(self, selector: Selector, q: float, window: float | None) -> float | None:
            return None

    rule = "increase(x_total[1m]) > 0"
    alerts = Alerts(Source(), [rule], clock=clock)
    for _ in range(3):
        seen = await values(alerts)
        clock.advance(10)
    assert seen[rule] == 10 + 5  # 10 -> 20, then restarted and counted up to 5


async def test_percentile_over_the_recent_window(clock: FakeClock) -> None:
    metrics = Metrics(clock)
    source = MetricsSource(metrics)
    chat = Selector.of("overdrive_request_duration_seconds", op="chat")
    chat_key = (("op", "chat"),)
    assert source.percentile(chat, 95, None) == {}
    for value in (0.1, 0.2, 5.0):
        metrics.histogram("overdrive_request_duration_seconds", op="chat").observe(value)
    metrics.histogram("overdrive_request_duration_seconds", op="embeddings").observe(9.0)
    assert source.percentile(chat, 95, None) == {chat_key: pytest.approx(5.0, rel=0.01)}
    per_op = source.percentile(Selector.of("overdrive_request_duration_seconds"), 100, None)
    assert per_op == {
        chat_key: pytest.approx(5.0, rel=0.01),
        (("op", "embeddings"),): pytest.approx(9.0, rel=0.01),
    }
    merged = Selector("overdrive_request_duration_seconds", by=())
    assert source.percentile(merged, 100, None) == {(): pytest.approx(9.0, rel=0.01)}
    clock.advance(120)  # older than the default 1m lookback
    metrics.histogram("overdrive_request_duration_seconds", op="chat").observe(0.3)
    assert source.percentile(chat, 95, None) == {chat_key: pytest.approx(0.3, rel=0.01)}
    assert source.percentile(chat, 95, 300) == {chat_key: pytest.approx(5.0, rel=0.01)}
    assert source.percentile(chat, 95, 3600) == {chat_key: pytest.approx(5.0, rel=0.01)}


# -- the state machine ------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def __call__(self, event: AlertEvent) -> None:
        self.events.append(event)

    @property
    def states(self) -> list[str]:
        return [event.state for event in self.events]


def slow_chat(metrics: Metrics, seconds: float) -> None:
    metrics.histogram("overdrive_request_duration_seconds", op="chat").observe(seconds)


async def test_fires_after_for_not_before_then_resolves(clock: FakeClock) -> None:
    metrics, seen = Metrics(clock), Recorder()
    alerts = Alerts(metrics, [CHAT_P95], [CallbackSink(seen)], clock=clock, interval=15)
    slow_chat(metrics, 4.0)
    await alerts.evaluate()
    assert alerts.state(CHAT_P95) == "pending"
    for _ in range(3):  # 45s of 60s held: still pending
        clock.advance(15)
        slow_chat(metrics, 4.0)
        assert await alerts.evaluate() == []
        assert alerts.state(CHAT_P95) == "pending"
    clock.advance(15)
    slow_chat(metrics, 4.0)
    [fired] = await alerts.evaluate()
    assert (fired.state, fired.since, fired.active_since) == ("firing", 60.0, 0.0)
    assert fired.value == pytest.approx(4.0, rel=0.01)
    assert fired.threshold == 3.0
    clock.advance(75)  # the slow calls leave the 1m window
    slow_chat(metrics, 0.5)
    [resolved] = await alerts.evaluate()
    assert (resolved.state, resolved.since) == ("resolved", 135.0)
    assert resolved.key != fired.key
    clock.advance(15)
    assert await alerts.evaluate() == []
    assert alerts.state(CHAT_P95) == "inactive"
    assert seen.states == ["firing", "resolved"]


async def test_flapping_inside_for_never_fires(clock: FakeClock) -> None:
    source = Scripted()
    seen = Recorder()
    alerts = Alerts(source, ["x > 1 for 30s"], [CallbackSink(seen)], clock=clock)
    for value in [2, 2, 0, 2, 2, 0, 2, None, 2, 2, 0] * 3:
        source.now = value
        await alerts.evaluate()
        clock.advance(15)
    assert seen.events == []
    assert alerts.state("x > 1 for 30s") == "inactive"


async def test_one_notification_per_transition_over_many_evaluations(clock: FakeClock) -> None:
    source, seen = Scripted(), Recorder()
    alerts = Alerts(source, ["x > 1 for 1m"], [CallbackSink(seen)], clock=clock)
    for value, passes in ((5, 40), (0, 40), (5, 40), (None, 40)):
        source.now = value
        for _ in range(passes):
            await alerts.evaluate()
            clock.advance(15)
    assert seen.states == ["firing", "resolved", "firing", "resolved"]
    assert len({event.key for event in seen.events}) == 4


async def test_zero_duration_fires_at_once_and_reminders_are_opt_in(clock: FakeClock) -> None:
    source, seen = Scripted(), Recorder()
    rule = parse_rule("x > 1", name="x-high", labels={"severity": "page"}, repeat_interval=60)
    alerts = Alerts(source, [rule], [CallbackSink(seen)], clock=clock)
    source.now = 2
    for _ in range(9):  # 0s .. 120s
        await alerts.evaluate()
        clock.advance(15)
    assert [(e.state, e.repeat, e.since) for e in seen.events] == [
        ("firing", 0, 0.0),
        ("firing", 1, 0.0),
        ("firing", 2, 0.0),
    ]
    assert seen.events[0].labels == {"severity": "page"}
    assert len({event.key for event in seen.events}) == 3


class Scripted:
    """A metric source whose every value is ``now``."""

    def __init__(self) -> None:
        self.now: float | None = None

    def sample(self, selector: Selector) -> float | None:
        return self.now

    def percentile(self, selector: Selector, q: float, window: float | None) -> float | None:
        return self.now


# -- sinks ------------------------------------------------------------------------


async def test_async_callback_and_log_sink(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    source, seen = Scripted(), []

    async def remember(event: AlertEvent) -> None:
        seen.append(event.to_dict())

    alerts = Alerts(source, ["x > 1"], [CallbackSink(remember), LogSink()], clock=clock)
    caplog.set_level(logging.INFO, logger="overdrive.alerts")
    source.now = 3
    await alerts.evaluate()
    source.now = 0
    await alerts.evaluate()
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert caplog.records[0].getMessage() == "[FIRING] x > 1: x > 1 (value 3)"
    assert caplog.records[1].getMessage() == "[RESOLVED] x > 1: x > 1 (value 0)"
    assert [payload["state"] for payload in seen] == ["firing", "resolved"]
    assert set(seen[0]) >= {"rule", "expression", "state", "value", "threshold", "since"}
    assert set(seen[0]) >= {"labels", "summary", "idempotency_key"}


async def test_a_failing_sink_never_breaks_evaluation(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, seen = Metrics(clock), Recorder()

    def broken(event: AlertEvent) -> None:
        raise RuntimeError("sink down")

    alerts = Alerts(
        metrics, ["overdrive_errors_total > 1"], [CallbackSink(broken), CallbackSink(seen)]
    )
    metrics.counter("overdrive_errors_total").inc(5)
    await alerts.evaluate()
    assert seen.states == ["firing"]
    assert alerts.failures == 1
    failed = metrics.value("overdrive_alert_notifications_total", outcome="failed")
    delivered = metrics.value("overdrive_alert_notifications_total", outcome="delivered")
    assert (failed, delivered) == (1, 1)
    assert "sink down" in caplog.text


async def test_a_failing_metric_source_reads_as_no_data(clock: FakeClock) -> None:
    class Broken(Scripted):
        def sample(self, selector: Selector) -> float | None:
            raise RuntimeError("store down")

    alerts = Alerts(Broken(), ["x > 1", "rate(y_total) > 1"], clock=clock)
    assert await alerts.evaluate() == []
    assert [status["value"] for status in alerts.status()] == [None, None]


async def test_real_webhook_gets_each_transition_exactly_once(clock: FakeClock) -> None:
    source = Scripted()
    with WebhookReceiver(fail_first=1) as receiver:
        hook = WebhookSink(receiver.url, backoff=0.01, timeout=5.0)
        alerts = Alerts(source, [parse_rule("x > 1 for 30s", name="x-high")], [hook], clock=clock)
        for value, passes in ((5, 6), (0, 6)):
            source.now = value
            for _ in range(passes):
                await alerts.evaluate()
                clock.advance(15)
        await alerts.aclose()
    # The first POST got a 500 and was retried with the same key.
    assert len(receiver.posts) == 3
    assert receiver.posts[0]["key"] == receiver.posts[1]["key"]
    assert (receiver.duplicates, receiver.malformed) == (0, 0)
    delivered = list(receiver.accepted.values())
    assert [(p["rule"], p["state"], p["since"]) for p in delivered] == [
        ("x-high", "firing", 30.0),
        ("x-high", "resolved", 90.0),
    ]
    assert delivered[0]["value"] == 5
    assert delivered[0]["summary"] == "[FIRING] x-high: x > 1 for 30s (value 5)"
    assert alerts.failures == 0


async def test_webhook_gives_up_and_counts(clock: FakeClock) -> None:
    source = Scripted()
    with WebhookReceiver(fail_first=10) as receiver:
        hook = WebhookSink(receiver.url, attempts=3, backoff=0.01)
        alerts = Alerts(source, ["x > 1"], [hook], clock=clock)
        source.now = 5
        await alerts.evaluate()
        await alerts.aclose()
    assert len(receiver.posts) == 3
    assert receiver.accepted == {}
    assert alerts.failures == 1


async def test_webhook_does_not_retry_a_client_error() -> None:
    calls: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404)

    async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as client:
        hook = WebhookSink("http://alerts.invalid/hook", client=client, backoff=0)
        event = AlertEvent("r", "x > 1", "firing", 2.0, 1.0, 0.0, 0.0, key="k1")
        with pytest.raises(Exception, match="gave up on HTTP 404"):
            await hook.send(event)
    assert len(calls) == 1
    assert calls[0].headers["idempotency-key"] == "k1"


# -- running on the clock -----------------------------------------------------------


async def test_start_evaluates_every_interval_without_polling(clock: FakeClock) -> None:
    source, seen = Scripted(), Recorder()
    alerts = Alerts(source, ["x > 1 for 30s"], [CallbackSink(seen)], clock=clock, interval=10)
    source.now = 5
    async with alerts:
        await clock.run_for(0.1)
        assert clock.sleepers == 1  # one timer, not a polling loop
        await clock.run_for(29.8)
        assert seen.events == []  # pending since 0; due at 30
        await clock.run_for(0.2)
        assert seen.states == ["firing"]
        assert seen.events[0].since == pytest.approx(30.0, abs=0.02)  # run_for steps by 0.01
    assert clock.sleepers == 0


def test_p100_is_the_maximum_not_p10() -> None:
    assert parse_rule("p100(h) > 1").expr == Percentile(100, Selector.of("h"))
    assert parse_rule("p999(h) > 1").expr == Percentile(99.9, Selector.of("h"))


def test_an_owned_webhook_client_is_made_again_on_the_next_loop() -> None:
    event = AlertEvent("r", "x > 1", "firing", 2.0, 1.0, 0.0, 0.0, key="k1")
    with WebhookReceiver(keep_alive=True) as receiver:
        hook = WebhookSink(receiver.url, backoff=0.01, attempts=1)

        async def send(key: str) -> None:
            await hook.send(dataclasses.replace(event, key=key))
            await hook.aclose()  # as the engine does when its loop ends

        asyncio.run(send("k1"))
        asyncio.run(send("k2"))  # closed on the first loop: a new pool on this one
    assert sorted(receiver.accepted) == ["k1", "k2"]
