"""Alerts judged per label set: separate states, timers and reminders; matching; the bound."""

from __future__ import annotations

import pytest

from overdrive import ConfigError
from overdrive.monitor import Metrics
from overdrive.monitor._alert_parse import parse_rule
from overdrive.monitor._alert_rules import Percentile, Rate, Selector
from overdrive.monitor._alert_sinks import AlertEvent, CallbackSink
from overdrive.monitor._alert_vector import Labels, Sample, Vector, combine
from overdrive.monitor._alerts import Alerts
from overdrive.testing import FakeClock

LATENCY = "overdrive_upstream_duration_seconds"
SLOW = f"p95({LATENCY}{{op=chat}}) > 250ms for 30s"


class Recorder:
    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def __call__(self, event: AlertEvent) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[str, dict[str, str]]]:
        return [(event.state, dict(event.series)) for event in self.events]


def observe(metrics: Metrics, model: str, seconds: float, upstream: str = "a") -> None:
    metrics.histogram(LATENCY, op="chat", model=model, upstream=upstream).observe(seconds)


async def step(alerts: Alerts, clock: FakeClock, seconds: float = 15) -> list[AlertEvent]:
    clock.advance(seconds)
    return await alerts.evaluate()


async def test_only_the_slow_label_set_fires(clock: FakeClock) -> None:
    metrics, seen = Metrics(clock), Recorder()
    alerts = Alerts(metrics, [SLOW], [CallbackSink(seen)], clock=clock)
    for _ in range(3):  # 0s, 15s, 30s: gpt-4o slow all along, mini fast
        observe(metrics, "gpt-4o", 0.9)
        observe(metrics, "mini", 0.05)
        events = await alerts.evaluate()
        clock.advance(15)
    assert [(e.state, dict(e.series)) for e in events] == [
        ("firing", {"model": "gpt-4o", "op": "chat", "upstream": "a"})
    ]
    assert events[0].summary.startswith(
        f'[FIRING] {SLOW}{{model="gpt-4o", op="chat", upstream="a"}}:'
    )
    assert alerts.state(SLOW, {"model": "gpt-4o", "op": "chat", "upstream": "a"}) == "firing"
    assert alerts.state(SLOW, {"model": "mini", "op": "chat", "upstream": "a"}) == "inactive"
    assert alerts.state(SLOW) == "firing"  # the most urgent of its label sets
    rows = {row["series"]: row["state"] for row in alerts.status()}
    assert rows == {
        '{model="gpt-4o", op="chat", upstream="a"}': "firing",
        '{model="mini", op="chat", upstream="a"}': "inactive",
    }


async def test_for_timers_and_resolution_are_per_label_set(clock: FakeClock) -> None:
    metrics, seen = Metrics(clock), Recorder()
    alerts = Alerts(metrics, [SLOW], [CallbackSink(seen)], clock=clock)
    a, b = (
        {"model": "a", "op": "chat", "upstream": "u"},
        {"model": "b", "op": "chat", "upstream": "u"},
    )
    observe(metrics, "a", 1.0, "u")
    await alerts.evaluate()  # t=0: a pending
    clock.advance(15)
    observe(metrics, "a", 1.0, "u")
    observe(metrics, "b", 1.0, "u")
    await alerts.evaluate()  # t=15: b pending, 15s after a
    assert (alerts.state(SLOW, a), alerts.state(SLOW, b)) == ("pending", "pending")
    for _ in range(2):  # t=30: a fires; t=45: b fires
        observe(metrics, "a", 1.0, "u")
        observe(metrics, "b", 1.0, "u")
        await step(alerts, clock)
    assert [(e.state, e.since, e.series["model"]) for e in seen.events] == [
        ("firing", 30.0, "a"),
        ("firing", 45.0, "b"),
    ]
    clock.advance(75)  # every slow call leaves the 1m window
    observe(metrics, "a", 0.01, "u")  # a fast again; b still slow
    observe(metrics, "b", 2.0, "u")
    [resolved] = await alerts.evaluate()
    assert (resolved.state, resolved.series["model"], resolved.since) == ("resolved", "a", 120.0)
    assert (alerts.state(SLOW, a), alerts.state(SLOW, b)) == ("resolved", "firing")
    assert len({event.key for event in seen.events}) == 3


async def test_reminders_are_per_label_set(clock: FakeClock) -> None:
    metrics, seen = Metrics(clock), Recorder()
    rule = parse_rule("errors_total > 1", name="errors", repeat_interval=30)
    alerts = Alerts(metrics, [rule], [CallbackSink(seen)], clock=clock)
    metrics.counter("errors_total", upstream="a").inc(5)
    await alerts.evaluate()  # t=0: a fires
    metrics.counter("errors_total", upstream="b").inc(5)
    for _ in range(4):  # t=15: b fires; reminders of a at 30, 60 and of b at 45
        await step(alerts, clock)
    assert [(e.series["upstream"], e.repeat, e.since) for e in seen.events] == [
        ("a", 0, 0.0),
        ("b", 0, 15.0),
        ("a", 1, 0.0),
        ("b", 1, 15.0),
        ("a", 2, 0.0),
    ]


async def test_a_label_set_that_disappears_resolves_then_is_forgotten(clock: FakeClock) -> None:
    values: Vector = {(("model", "a"),): 5.0, (("model", "b"),): 5.0}

    class Source:
        def sample(self, selector: Selector) -> Vector:
            return dict(values)

        def percentile(self, selector: Selector, q: float, window: float | None) -> None:
            return None

    seen = Recorder()
    alerts = Alerts(Source(), ["x > 1"], [CallbackSink(seen)], clock=clock)
    await alerts.evaluate()
    del values[(("model", "b"),)]
    [gone] = await step(alerts, clock)
    assert (gone.state, dict(gone.series), gone.value) == ("resolved", {"model": "b"}, None)
    await step(alerts, clock)
    assert [row["series"] for row in alerts.status()] == ['{model="a"}']
    assert seen.seen() == [
        ("firing", {"model": "a"}),
        ("firing", {"model": "b"}),
        ("resolved", {"model": "b"}),
    ]


# -- matching two operands ------------------------------------------------------------


def joined(op: str, left: Sample, right: Sample, limit: int = 1000) -> Vector:
    found = combine(op, left, right, limit)
    assert isinstance(found, dict)
    return found


def test_vectors_match_on_the_labels_they_share() -> None:
    chat_a: Labels = (("op", "chat"), ("upstream", "a"))
    chat_b: Labels = (("op", "chat"), ("upstream", "b"))
    errors: Vector = {
        (("kind", "timeout"), ("op", "chat"), ("upstream", "a")): 2.0,
        (("kind", "reset"), ("op", "chat"), ("upstream", "a")): 1.0,
        (("kind", "timeout"), ("op", "chat"), ("upstream", "c")): 9.0,  # no partner
    }
    requests: Vector = {chat_a: 10.0, chat_b: 20.0}
    assert joined("/", errors, requests) == {
        (("kind", "reset"), ("op", "chat"), ("upstream", "a")): 0.1,
        (("kind", "timeout"), ("op", "chat"), ("upstream", "a")): 0.2,
    }
    assert joined("-", requests, 5.0) == {chat_a: 5.0, chat_b: 15.0}
    assert joined("-", 30.0, requests) == {chat_a: 20.0, chat_b: 10.0}
    assert joined("/", requests, {(): 10.0}) == {chat_a: 1.0, chat_b: 2.0}  # nothing shared
    assert joined("/", requests, {chat_a: 0.0}) == {}  # a division by zero is no data
    assert combine("+", 1.0, None) is None


def test_two_pairs_giving_one_label_set_are_ambiguous_and_dropped() -> None:
    # A missing label counts as empty: both left series pair with the right one,
    # and both pairs would be {op="chat", tier=""}.
    left: Vector = {(("op", "chat"),): 1.0, (("op", "chat"), ("tier", "")): 2.0}
    right: Vector = {(("op", "chat"), ("tier", "")): 3.0, (("op", "chat"), ("tier", "x")): 4.0}
    assert joined("+", left, right) == {}
    many: Vector = {(("k", "1"), ("op", "chat")): 1.0, (("k", "2"), ("op", "chat")): 1.0}
    other: Vector = {(("j", "1"), ("op", "chat")): 1.0}
    assert sorted(joined("+", many, other)) == [  # many-to-one: distinct label sets, kept
        (("j", "1"), ("k", "1"), ("op", "chat")),
        (("j", "1"), ("k", "2"), ("op", "chat")),
    ]


def test_a_cross_product_is_bounded() -> None:
    left: Vector = {(("a", str(i)),): 1.0 for i in range(100)}
    right: Vector = {(("b", str(i)),): 1.0 for i in range(100)}
    assert len(joined("*", left, right, limit=250)) == 250


async def test_ratio_of_rates_per_op(clock: FakeClock) -> None:
    metrics, seen = Metrics(clock), Recorder()
    rule = "ratio(rate(errors_total), rate(requests_total)) > 10%"
    alerts = Alerts(metrics, [rule], [CallbackSink(seen)], clock=clock)
    await alerts.evaluate()
    for _ in range(4):
        clock.advance(15)
        metrics.counter("requests_total", op="chat").inc(100)
        metrics.counter("errors_total", op="chat").inc(20)
        metrics.counter("requests_total", op="embeddings").inc(100)
        metrics.counter("errors_total", op="embeddings").inc(1)
        await alerts.evaluate()
    values = {row["series"]: row["value"] for row in alerts.status()}
    assert values == {'{op="chat"}': pytest.approx(0.2), '{op="embeddings"}': pytest.approx(0.01)}
    assert seen.seen() == [("firing", {"op": "chat"})]


async def test_by_sums_and_merges_down_to_its_labels(clock: FakeClock) -> None:
    metrics = Metrics(clock)
    for model, upstream, seconds in (("a", "x", 1.0), ("a", "y", 3.0), ("b", "x", 0.5)):
        metrics.histogram(LATENCY, model=model, upstream=upstream).observe(seconds)
        metrics.counter("requests_total", model=model, upstream=upstream).inc(10)
    rules = [
        f"p100({LATENCY}) by (model) > 0",
        f"p100({LATENCY}) by () > 0",
        "value(requests_total) by (upstream) > 0",
        "rate(requests_total[2m]) by (model) > 0",
    ]
    alerts = Alerts(metrics, rules, clock=clock)
    await alerts.evaluate()
    metrics.counter("requests_total", model="a", upstream="x").inc(30)
    await step(alerts, clock, 10)
    values = {(row["rule"], row["series"]): row["value"] for row in alerts.status()}
    assert values == {
        (rules[0], '{model="a"}'): pytest.approx(3.0, rel=0.01),
        (rules[0], '{model="b"}'): pytest.approx(0.5, rel=0.01),
        (rules[1], ""): pytest.approx(3.0, rel=0.01),
        (rules[2], '{upstream="x"}'): 50.0,
        (rules[2], '{upstream="y"}'): 10.0,
        (rules[3], '{model="a"}'): 3.0,  # 30 more over 10 s
        (rules[3], '{model="b"}'): 0.0,
    }


def test_by_parses_and_renders_back() -> None:
    rule = parse_rule(f"p95({LATENCY}{{op=chat}}[5m]) by (upstream, model) > 1s")
    chat = Selector(LATENCY, (("op", "chat"),), by=("model", "upstream"))
    assert rule.expr == Percentile(95, chat, 300)
    assert parse_rule(str(rule.expr) + " > 1").expr == rule.expr
    assert parse_rule("rate(x_total) by () > 1").expr == Rate(Selector("x_total", by=()))
    with pytest.raises(ConfigError, match=r"expected `by \(...\)` after value, rate"):
        parse_rule("ratio(a, b) by (op) > 1")
    with pytest.raises(ConfigError, match="expected a label name"):
        parse_rule("rate(x_total) by (1) > 1")


# -- the bound ------------------------------------------------------------------------


async def test_label_sets_per_rule_are_bounded_and_counted(clock: FakeClock) -> None:
    metrics, seen = Metrics(clock), Recorder()
    rules = ["errors_total > 0", "rate(errors_total) > 0"]
    alerts = Alerts(metrics, rules, [CallbackSink(seen)], clock=clock, max_series=50)
    for i in range(200):  # a hostile cardinality: one series per request id
        metrics.counter("errors_total", request=str(i)).inc()
    await alerts.evaluate()
    await step(alerts, clock)
    assert [len([r for r in alerts.status() if r["rule"] == rule]) for rule in rules] == [50, 50]
    assert alerts.dropped == {rules[0]: 2 * 150, rules[1]: 0}  # per pass, counted each time
    # The rate history is held to the bound (so the rate rule sees only 50).
    assert (alerts._history.tracked(), alerts._history.dropped) == (50, 2 * 150)
    assert len(seen.events) == 50  # only tracked label sets notify
    # The ones tracked stay tracked: the flood does not push a firing alert out.
    tracked = {row["series"] for row in alerts.status() if row["rule"] == rules[0]}
    for i in range(200, 400):
        metrics.counter("errors_total", request=str(i)).inc()
    assert await step(alerts, clock) == []
    assert {row["series"] for row in alerts.status() if row["rule"] == rules[0]} == tracked
    assert alerts.state(rules[0]) == "firing"
    assert "dropped=" in repr(alerts)


def test_max_series_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="max_series"):
        Alerts(Metrics(clock), ["x > 1"], clock=clock, max_series=0)
