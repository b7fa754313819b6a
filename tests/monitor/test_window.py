from __future__ import annotations

import pytest

from overdrive import ConfigError
from overdrive.monitor import Metrics
from overdrive.testing import FakeClock


def test_old_observations_leave_the_minute_window_after_sixty_seconds() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    metrics.histogram("latency_seconds").observe(5.0)
    metrics.counter("calls_total").inc(3)
    clock.advance(59.9)
    assert metrics.window("latency_seconds", seconds=60).count == 1
    assert metrics.window("calls_total", seconds=60).count == 3
    clock.advance(0.1)
    assert metrics.window("latency_seconds", seconds=60).count == 0
    assert metrics.window("calls_total", seconds=60).count == 0
    # ... but stay in the five-minute window and in the totals.
    assert metrics.window("latency_seconds", seconds=300).count == 1
    assert metrics.window("calls_total", seconds=300).count == 3
    assert metrics.histogram("latency_seconds").count == 1
    clock.advance(240)
    assert metrics.window("calls_total", seconds=300).count == 0
    assert metrics.value("calls_total") == 3


def test_window_percentiles_follow_recent_latency() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    histogram = metrics.histogram("latency_seconds", op="chat")
    for _ in range(100):
        histogram.observe(2.0)  # a slow spell ...
    clock.advance(120)
    for _ in range(100):
        histogram.observe(0.1)  # ... then fast again
    assert metrics.window("latency_seconds", 60).percentile(99) == pytest.approx(0.1, rel=0.01)
    assert metrics.window("latency_seconds", 300).percentile(99) == pytest.approx(2.0, rel=0.01)
    assert histogram.percentile(50) == pytest.approx(0.1, rel=0.01)


def test_rate_is_per_second_over_the_covered_span() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    counter = metrics.counter("calls_total", op="chat")
    for _ in range(300):
        counter.inc()
        clock.advance(1.0)
    window = metrics.window("calls_total", seconds=60, op="chat")
    # Slot granularity: a 60 s window covers the last 50-60 s.
    assert 50 <= window.seconds <= 60
    assert window.rate == pytest.approx(1.0, rel=0.03)
    young = Metrics(clock)
    young.counter("calls_total").inc(10)
    clock.advance(2.0)
    assert young.window("calls_total", 60).rate == pytest.approx(5.0)


def test_windows_merge_series_matching_a_label_subset() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    metrics.histogram("latency_seconds", op="chat", upstream="a").observe(0.1)
    metrics.histogram("latency_seconds", op="chat", upstream="b").observe(0.3)
    metrics.histogram("latency_seconds", op="embeddings", upstream="a").observe(9.0)
    chat = metrics.window("latency_seconds", 60, op="chat")
    assert chat.count == 2
    assert chat.mean == pytest.approx(0.2)
    assert metrics.window("latency_seconds", 60).count == 3
    assert metrics.window("unknown_seconds", 60).count == 0


def test_a_long_idle_gap_clears_every_slot() -> None:
    clock = FakeClock(start=1234.5)
    metrics = Metrics(clock)
    metrics.counter("calls_total").inc()
    clock.advance(10_000)
    metrics.counter("calls_total").inc()
    assert metrics.window("calls_total", 300).count == 1


def test_window_bounds_and_windowless_registry() -> None:
    metrics = Metrics(FakeClock())
    metrics.counter("calls_total").inc()
    with pytest.raises(ConfigError, match=r"seconds in \(0, 300\], got 301"):
        metrics.window("calls_total", seconds=301)
    plain = Metrics(horizon_seconds=0)
    plain.counter("calls_total").inc()
    with pytest.raises(ConfigError, match="keeps no windows"):
        plain.window("calls_total")
