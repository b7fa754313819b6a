from __future__ import annotations

import pytest

from overdrive import ConfigError
from overdrive.flow import HedgeDelay, RetryBudget
from overdrive.testing import FakeClock


def test_retries_are_a_share_of_attempts(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, clock=clock)
    for _ in range(50):
        budget.record_attempt()
    granted = sum(budget.try_spend() for _ in range(20))
    assert granted == 10
    assert budget.retries == 10


def test_floor_allows_retries_on_a_quiet_upstream(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0.5, window=10, clock=clock)
    assert sum(budget.try_spend() for _ in range(10)) == 5


def test_budget_refills_as_the_window_slides(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10, clock=clock)
    for _ in range(4):
        budget.record_attempt()
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    clock.advance(10.5)  # everything above fell out of the window
    assert budget.attempts == 0
    assert not budget.try_spend()
    budget.record_attempt()
    budget.record_attempt()
    assert budget.try_spend()


@pytest.mark.parametrize(("ratio", "floor"), [(-0.1, 0.0), (1.5, 0.0), (0.1, -1.0)])
def test_bad_budget_settings_name_the_field(clock: FakeClock, ratio: float, floor: float) -> None:
    with pytest.raises(ConfigError, match=r"retry\.budget"):
        RetryBudget(ratio=ratio, min_per_second=floor, clock=clock)


def test_hedge_delay_waits_for_samples_then_tracks_the_tail() -> None:
    delay = HedgeDelay(quantile=90, min_samples=10, refresh=1)
    for _ in range(9):
        delay.observe(0.1)
    assert delay.current is None
    for _ in range(91):
        delay.observe(0.1)
    assert delay.current == pytest.approx(0.1, rel=0.05)
    for _ in range(100):
        delay.observe(1.0)  # half the attempts are now slow
    assert delay.current == pytest.approx(1.0, rel=0.05)
