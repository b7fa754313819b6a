from __future__ import annotations

import random

from overdrive.monitor import Histogram, Metrics


def test_percentiles_within_half_a_percent() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(-2, 1) for _ in range(50_000))
    histogram = Histogram()
    for value in values:
        histogram.observe(value)
    for q in (50, 90, 99):
        exact = values[int(q / 100 * len(values)) - 1]
        assert abs(histogram.percentile(q) - exact) / exact < 0.0055
    assert histogram.count == len(values)


def test_zeros_and_empty() -> None:
    histogram = Histogram()
    assert histogram.percentile(99) == 0.0
    histogram.observe(0.0)
    histogram.observe(2.0)
    assert histogram.percentile(50) == 0.0
    assert abs(histogram.percentile(100) - 2.0) < 0.05


def test_registry_sums_counters_by_label_subset() -> None:
    metrics = Metrics()
    metrics.counter("calls_total", op="chat", upstream="a").inc()
    metrics.counter("calls_total", op="chat", upstream="b").inc(2)
    metrics.counter("calls_total", op="embeddings", upstream="a").inc()
    assert metrics.value("calls_total", op="chat") == 3
    assert metrics.value("calls_total") == 4
    assert metrics.counter("calls_total", upstream="a", op="chat").value == 1
    snapshot = metrics.snapshot()
    assert {
        "name": "calls_total",
        "labels": {"op": "chat", "upstream": "b"},
        "value": 2.0,
    } in snapshot["counters"]
