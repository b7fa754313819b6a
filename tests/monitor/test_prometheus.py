from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from overdrive import ConfigError, Overdrive
from overdrive.monitor import CONTENT_TYPE, Metrics, prometheus_text
from overdrive.monitor._prometheus import SECONDS_BUCKETS
from overdrive.testing import FakeClock
from tests.fakes import FakeServer, chat_response


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_exposition_parses_and_round_trips_values() -> None:
    metrics = Metrics(FakeClock())
    metrics.counter("overdrive_requests_total", op="chat").inc(3)
    metrics.counter("overdrive_requests_total", op="embeddings").inc(2)
    metrics.gauge("overdrive_in_flight", upstream="a").set_function(lambda: 4)
    metrics.gauge("overdrive_concurrency_limit", upstream="a").set(16)
    latency = metrics.histogram("overdrive_request_duration_seconds", op="chat")
    rng = random.Random(5)
    values = [rng.lognormvariate(-3, 1) for _ in range(5000)]
    for value in values:
        latency.observe(value)
    text = prometheus_text(metrics)

    families = _families(text)
    assert families["overdrive_requests"].type == "counter"
    assert families["overdrive_in_flight"].type == "gauge"
    assert families["overdrive_request_duration_seconds"].type == "histogram"
    assert _samples(text, "overdrive_requests_total") == {
        (("op", "chat"),): 3.0,
        (("op", "embeddings"),): 2.0,
    }
    assert _samples(text, "overdrive_in_flight") == {(("upstream", "a"),): 4.0}
    assert _samples(text, "overdrive_concurrency_limit") == {(("upstream", "a"),): 16.0}
    assert _samples(text, "overdrive_request_duration_seconds_count") == {(("op", "chat"),): 5000.0}
    [total] = _samples(text, "overdrive_request_duration_seconds_sum").values()
    assert total == pytest.approx(math.fsum(values))

    buckets = _samples(text, "overdrive_request_duration_seconds_bucket")
    ordered = sorted(buckets.items(), key=lambda item: float(dict(item[0])["le"]))
    counts = [count for _, count in ordered]
    assert counts == sorted(counts)  # cumulative
    assert len(counts) == len(SECONDS_BUCKETS) + 1
    assert dict(ordered[-1][0])["le"] == "+Inf"
    assert counts[-1] == 5000
    for labels, count in ordered[:-1]:
        bound = float(dict(labels)["le"])
        assert sum(v <= bound / 1.0055 for v in values) <= count
        assert count <= sum(v <= bound * 1.0055 for v in values)


def test_help_type_and_escaping() -> None:
    metrics = Metrics()
    metrics.describe("odd_total", 'A "quoted" \\ help\nwith a newline')
    metrics.counter("odd_total", path='C:\\dir "x"\nnext').inc()
    text = prometheus_text(metrics)
    assert '# HELP odd_total A "quoted" \\\\ help\\nwith a newline' in text
    assert "# TYPE odd_total counter" in text
    assert _samples(text, "odd_total") == {(("path", 'C:\\dir "x"\nnext'),): 1.0}
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    assert prometheus_text(Metrics()) == ""


def test_custom_buckets_and_size_histograms() -> None:
    metrics = Metrics()
    metrics.histogram("overdrive_batch_size", op="embeddings").observe(10)
    metrics.describe("tokens_per_call", "Tokens per call.", buckets=[100, 1000])
    metrics.histogram("tokens_per_call").observe(500)
    text = prometheus_text(metrics)
    batch = _samples(text, "overdrive_batch_size_bucket")
    assert batch[(("le", "5.0"), ("op", "embeddings"))] == 0
    assert batch[(("le", "10.0"), ("op", "embeddings"))] == 1
    assert _samples(text, "tokens_per_call_bucket") == {
        (("le", "100.0"),): 0,
        (("le", "1000.0"),): 1,
        (("le", "+Inf"),): 1,
    }
    with pytest.raises(ValueError, match="must ascend"):
        metrics.describe("x_seconds", "x", buckets=[2, 1])


def test_a_failing_gauge_callback_drops_only_its_sample() -> None:
    metrics = Metrics()
    metrics.gauge("broken").set_function(lambda: 1 / 0)
    metrics.gauge("fine").set(1)
    text = prometheus_text(metrics)
    assert "fine 1.0" in text
    assert "broken " not in text.replace("# HELP broken", "").replace("# TYPE broken", "")
    assert metrics.snapshot()["gauges"][0] == {"name": "broken", "labels": {}, "value": None}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: m.counter("requests"), "must end in `_total`"),
        (lambda m: m.counter("bad-name_total"), r"must match \[a-zA-Z_:\]"),
        (lambda m: m.histogram("latency_total"), "must not end in"),
        (lambda m: m.gauge("queue_count"), "must not end in"),
        (lambda m: m.counter("ok_total", **{"bad-label": "x"}), "label name must match"),
        (lambda m: m.counter("ok_total", __reserved="x"), "not start with __"),
        (lambda m: m.histogram("latency_seconds", le="1"), "`le` is reserved"),
    ],
)
def test_bad_names_and_labels_are_config_errors(make: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        make(Metrics())
    assert caught.value.field.startswith("metrics.")


def test_one_name_one_kind() -> None:
    metrics = Metrics()
    metrics.histogram("latency_seconds").observe(1)
    with pytest.raises(ConfigError, match="already registered as a histogram"):
        metrics.gauge("latency_seconds")


async def test_engine_latency_histograms_match_observed_latencies(clock: FakeClock) -> None:
    rng = random.Random(11)
    latencies = [round(rng.lognormvariate(-2, 0.8), 6) for _ in range(200)]
    started = asyncio.Event()

    async def upstream(request: httpx.Request) -> httpx.Response:
        started.set()
        await clock.sleep(latencies[len(seen)])
        seen.append(latencies[len(seen)])
        return httpx.Response(200, json=chat_response("m"))

    seen: list[float] = []
    async with FakeServer(upstream) as server:
        config = {"upstreams": [{"name": "a", "base_url": server.url, "models": ["m"]}]}
        async with Overdrive.from_config(config, clock=clock) as od:
            for i, latency in enumerate(latencies):
                started.clear()
                task = asyncio.ensure_future(
                    od.chat(model="m", messages=[{"role": "user", "content": str(i)}])
                )
                await started.wait()
                clock.advance(latency)  # the upstream answers after exactly ``latency``
                await task  # no fake time passes while the answer crosses the socket
    assert seen == latencies

    exact = sorted(latencies)
    text = prometheus_text(od.metrics)
    assert "overdrive_request_duration_seconds" in _families(text)
    for name, labels in [
        ("overdrive_request_duration_seconds", {"op": "chat"}),
        ("overdrive_upstream_duration_seconds", {"op": "chat", "upstream": "a"}),
    ]:
        histogram = od.metrics.histogram(name, **labels)
        assert histogram.count == len(latencies)
        for q in (50, 90, 99):
            expected = exact[math.ceil(q / 100 * len(exact)) - 1]
            assert histogram.percentile(q) == pytest.approx(expected, rel=0.01)
        [count] = _samples(text, f"{name}_count").values()
        assert count == len(latencies)
