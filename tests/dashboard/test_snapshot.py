"""The snapshot: after real calls through a simulated upstream, it says what the registry holds."""

from __future__ import annotations

import json

from overdrive import Overdrive
from overdrive.dashboard import SNAPSHOT_VERSION, Source, snapshot
from overdrive.monitor import Metrics
from overdrive.monitor.names import (
    CACHE_HITS,
    COST,
    GATEWAY_REQUESTS,
    QUEUE_WAIT,
    REQUEST_DURATION,
    REQUESTS,
    TOKENS,
    UPSTREAM_DURATION,
    UPSTREAM_RATE_LIMITED,
)
from overdrive.optimize import Optimizer, Tunables, analyse
from overdrive.optimize._loop import Decision
from overdrive.sim import SimServer

from .conftest import MODEL, engine_config


async def test_figures_are_the_registrys_after_real_calls(sim: SimServer) -> None:
    od = Overdrive.from_config(engine_config(sim))
    try:
        for prompt in ("a", "b", "a", "a", "c"):
            await od.chat(model=MODEL, messages=[{"role": "user", "content": prompt}])
        shot = snapshot(od)
    finally:
        await od.aclose()
    metrics = od.metrics
    totals = shot["totals"]
    assert totals["requests"] == metrics.value(REQUESTS) == 5
    assert totals["cache_hits"] == metrics.value(CACHE_HITS) == 2
    assert totals["prompt_tokens"] == metrics.value(TOKENS, kind="prompt") > 0
    assert totals["completion_tokens"] == metrics.value(TOKENS, kind="completion") > 0
    assert totals["cost_usd"] == metrics.value(COST) > 0
    assert shot["hit_ratio"]["exact"] == 2 / 5
    assert shot["hit_ratio"]["semantic"] is None  # the tier is off: no lookups
    (by_op,) = shot["latency"]["by_op"]
    duration = metrics.histogram(REQUEST_DURATION, op="chat")
    assert (by_op["name"], by_op["count"]) == ("chat", 5)
    assert by_op["p50"] == duration.percentile(50)
    assert by_op["p99"] == duration.percentile(99)
    (upstream_latency,) = shot["latency"]["by_upstream"]
    assert upstream_latency["count"] == 3  # the three misses went out
    assert (
        shot["stages"]["upstream"]
        == metrics.histogram(UPSTREAM_DURATION, upstream="sim", op="chat").sum
    )
    assert shot["stages"]["queue"] == metrics.histogram(QUEUE_WAIT, upstream="sim", op="chat").sum
    (row,) = shot["upstreams"]
    assert (row["name"], row["requests"], row["state"]) == ("sim", 3, "healthy")
    assert shot["spend"] == {MODEL: metrics.value(COST)}
    assert shot["version"] == SNAPSHOT_VERSION
    json.dumps(shot, allow_nan=False)  # plain JSON, no NaN or inf anywhere


def test_per_key_usage_and_spend_read_the_key_labels() -> None:
    metrics = Metrics()
    metrics.counter(GATEWAY_REQUESTS, key="team-a", code="200").inc(3)
    metrics.counter(GATEWAY_REQUESTS, key="team-a", code="429").inc()
    metrics.counter(GATEWAY_REQUESTS, key="team-b", code="200").inc(2)
    metrics.counter(COST, op="chat", model="m", upstream="u", key="team-a").inc(0.5)
    shot = snapshot(Source(metrics, {}))
    assert shot["keys"] == [
        {
            "key": "team-a",
            "requests": 4,
            "errors": 1,
            "codes": {"200": 3, "429": 1},
            "cost_usd": 0.5,
        },
        {"key": "team-b", "requests": 2, "errors": 0, "codes": {"200": 2}, "cost_usd": None},
    ]
    assert shot["totals"]["gateway_requests"] == 6


def test_without_a_key_label_on_cost_spend_per_key_is_unknown() -> None:
    metrics = Metrics()
    metrics.counter(GATEWAY_REQUESTS, key="", code="200").inc()
    metrics.counter(COST, op="chat", model="m", upstream="u").inc(0.25)
    shot = snapshot(Source(metrics, {}))
    assert shot["keys"][0]["cost_usd"] is None
    assert shot["spend"] == {"m": 0.25}


def test_429s_alerts_and_health_come_through_as_plain_data() -> None:
    metrics = Metrics()
    metrics.counter(UPSTREAM_RATE_LIMITED, upstream="u").inc(4)
    alerts = [{"rule": "slow", "labels": {"op": "chat"}, "state": "firing", "value": float("nan")}]
    stats = {"health": {"u": {"state": "ejected", "failures": 3}}, "alerts": alerts}
    shot = snapshot(Source(metrics, stats))
    assert shot["totals"]["rate_limited"] == 4
    assert shot["upstreams"][0]["state"] == "ejected"
    assert shot["upstreams"][0]["rate_limited"] == 4
    assert shot["alerts"] == [
        {"rule": "slow", "labels": {"op": "chat"}, "state": "firing", "value": None}
    ]
    assert snapshot(Source(metrics, {}))["alerts"] == []  # no alert rules: an empty list


def test_an_empty_engine_snapshots_to_zeros_and_empty_lists() -> None:
    shot = snapshot(Source(Metrics(), {}))
    assert shot["totals"]["requests"] == 0
    assert shot["latency"] == {"by_op": [], "by_upstream": [], "by_model": [], "tools": []}
    assert shot["decisions"] == []
    assert shot["keys"] == []
    assert shot["upstreams"] == []
    json.dumps(shot, allow_nan=False)


def test_the_optimizers_decisions_newest_first_with_before_and_after() -> None:
    metrics = Metrics()
    optimizer = Optimizer(
        tunables=Tunables(), metrics=metrics, analyse_fn=lambda _: analyse(metrics)
    )
    for n in range(25):
        after = None if n == 24 else {"throughput": 10.0 + n, "p95_s": float("inf")}
        optimizer.decisions.append(
            Decision(float(n), "cache.ttl", n, n + 1, "why", "finding", {"throughput": 9.0}, after)
        )
    shown = snapshot(Source(metrics, {}, optimizer))["decisions"]
    assert len(shown) == 20
    assert [d["at"] for d in shown[:2]] == [24.0, 23.0]
    assert shown[0]["after"] is None
    assert shown[0]["outcome"] == "pending"
    assert shown[1]["before"] == {"throughput": 9.0}
    assert shown[1]["after"] == {"throughput": 33.0, "p95_s": 0.0}  # inf is no JSON
    json.dumps(shown, allow_nan=False)


async def test_the_engines_alert_states_per_label_set(sim: SimServer) -> None:
    config = engine_config(sim)
    config["alerts"] = {
        "interval": "1h",  # judged below, by hand
        "rules": [
            {
                "name": "any-traffic",
                "rule": "p95(overdrive_request_duration_seconds) by (op) >= 0s",
            },
            {"name": "never", "rule": "p95(overdrive_request_duration_seconds) > 1h"},
        ],
    }
    od = Overdrive.from_config(config)
    try:
        await od.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert od.alerts is not None
        await od.alerts.evaluate()
        shown = snapshot(od)["alerts"]
    finally:
        await od.aclose()
    states = {(a["rule"], tuple(a["labels"].items())): a["state"] for a in shown}
    assert states[("any-traffic", (("op", "chat"),))] == "firing"
    assert [state for (rule, _), state in states.items() if rule == "never"] == ["inactive"]
    json.dumps(shown, allow_nan=False)
