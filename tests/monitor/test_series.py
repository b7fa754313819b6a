from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from overdrive.monitor import Counter, Gauge, Histogram

N = 1_000_000
QUANTILES = (1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99)


def _uniform(rng: random.Random) -> list[float]:
    return [rng.random() * 2.0 + 1e-9 for _ in range(N)]


def _lognormal(rng: random.Random) -> list[float]:
    # exp of a normal: latencies with a long right tail (median ~ 50 ms).
    return list(map(math.exp, (rng.gauss(-3.0, 1.2) for _ in range(N))))


def _exponential(rng: random.Random) -> list[float]:
    return [-0.2 * math.log(1.0 - rng.random()) for _ in range(N)]


@pytest.mark.parametrize("draw", [_uniform, _lognormal, _exponential])
def test_percentiles_within_one_percent_on_a_million_samples(
    draw: Callable[[random.Random], list[float]],
) -> None:
    values = draw(random.Random(7))
    histogram = Histogram()
    observe = histogram.observe
    for value in values:
        observe(value)
    values.sort()
    for q in QUANTILES:
        exact = values[max(1, math.ceil(q / 100 * N)) - 1]
        assert histogram.percentile(q) == pytest.approx(exact, rel=0.01), q
    assert histogram.count == N
    assert histogram.sum == pytest.approx(math.fsum(values))
    assert histogram.percentile(100) == values[-1]


def test_error_bound_holds_at_every_scale() -> None:
    # The bound is relative, so it holds from nanoseconds to hours.
    for value in (1e-9, 3.3e-6, 0.001, 0.7, 1.0, 2.0, 1234.5, 7.2e6):
        histogram = Histogram()
        histogram.observe(value * 0.5)
        histogram.observe(value)
        histogram.observe(value * 4)
        assert histogram.percentile(50) == pytest.approx(value, rel=0.0055)


def test_zeros_negatives_infinity_and_nan() -> None:
    histogram = Histogram()
    assert histogram.percentile(99) == 0.0
    for value in (0.0, -1.0, 2.0, math.inf, math.nan):
        histogram.observe(value)
    assert histogram.count == 4  # NaN is dropped
    assert histogram.zeros == 2
    assert histogram.percentile(25) == -1.0
    assert histogram.percentile(75) == pytest.approx(2.0, rel=0.006)
    assert histogram.percentile(100) == math.inf


def test_cumulative_counts_are_monotonic_and_end_at_count() -> None:
    rng = random.Random(1)
    histogram = Histogram()
    values = [rng.expovariate(10) for _ in range(10_000)]
    for value in values:
        histogram.observe(value)
    bounds = [0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 100.0]
    counts = histogram.cumulative(bounds)
    assert counts == sorted(counts)
    assert counts[-1] == histogram.count
    for bound, count in zip(bounds, counts, strict=True):
        # Only values within 0.55% of the bound may land on the wrong side.
        low = sum(v <= bound / 1.0055 for v in values)
        high = sum(v <= bound * 1.0055 for v in values)
        assert low <= count <= high


def test_merge_equals_observing_everything_in_one() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for i in range(1, 200):
        (a if i % 3 else b).observe(i / 7)
        both.observe(i / 7)
    merged = Histogram().merge([a, b])
    assert merged.count == both.count
    assert merged.sum == pytest.approx(both.sum)
    assert (merged.min, merged.max) == (both.min, both.max)
    assert [merged.percentile(q) for q in QUANTILES] == [both.percentile(q) for q in QUANTILES]
    merged.reset()
    assert (merged.count, merged.percentile(50)) == (0, 0.0)


def test_counter_only_goes_up() -> None:
    counter = Counter()
    counter.inc()
    counter.inc(2.5)
    assert counter.value == 3.5
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1)


def test_gauge_set_inc_dec_and_callback() -> None:
    gauge = Gauge()
    gauge.set(5)
    gauge.inc(2)
    gauge.dec()
    assert gauge.value == 6.0
    in_flight = [3]
    gauge.set_function(lambda: in_flight[0])
    assert gauge.value == 3.0
    in_flight[0] = 9
    assert gauge.value == 9.0  # read at every read, not cached
    gauge.set_function(None)
    assert gauge.value == 6.0
    assert "Gauge(6" in repr(gauge)
