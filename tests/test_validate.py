"""The shared checks of numeric settings: one error type, naming the field and the value."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive import ConfigError
from overdrive._validate import check_duration, check_float, check_int

Check = Callable[[str, object], float]


@pytest.mark.parametrize(
    ("value", "low", "high", "problem"),
    [
        (0, 1, None, "must be an integer >= 1, got 0"),
        (11, 1, 10, "must be an integer in [1, 10], got 11"),
        (5, None, 0, "must be an integer <= 0, got 5"),
        (2.0, 1, None, "must be an integer >= 1, got 2.0"),
        (True, 0, None, "must be an integer >= 0, got True"),
        ("3", 0, None, "must be an integer >= 0, got '3'"),
        (None, 0, None, "must be an integer >= 0, got None"),
    ],
)
def test_check_int_refuses(value: object, low: int | None, high: int | None, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_int("max_batch", value, low, high)
    assert (caught.value.field, caught.value.problem) == ("max_batch", problem)
    assert str(caught.value) == f"config field `max_batch`: {problem}"


def test_check_int_passes_what_fits() -> None:
    assert check_int("n", 1, 1) == 1
    assert check_int("n", 10, 1, 10) == 10
    assert check_int("seed", -(2**70), None) == -(2**70)


@pytest.mark.parametrize(
    ("value", "check", "problem"),
    [
        (0.0, partial(check_float, low=0.0, high=1.0, open_low=True), "a number in (0, 1]"),
        (1.5, partial(check_float, low=0.0, high=1.0), "a number in [0, 1]"),
        (math.nan, partial(check_float, low=0.0), "a number >= 0"),
        (-1, partial(check_float, low=0.0), "a number >= 0"),
        (math.inf, partial(check_float, low=0.0, finite=True), "a finite number >= 0"),
        (-math.inf, partial(check_float, finite=True), "a finite number"),
        (False, check_float, "a number"),
        ("0.5", check_float, "a number"),
    ],
)
def test_check_float_refuses(value: object, check: Check, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check("smoothing", value)
    assert (caught.value.field, caught.value.problem) == (
        "smoothing",
        f"must be {problem}, got {value!r}",
    )


def test_check_float_passes_what_fits_as_a_float() -> None:
    assert check_float("ratio", 1, 0.0, 1.0) == 1.0
    assert isinstance(check_float("ratio", 1, 0.0, 1.0), float)
    assert check_float("tolerance", math.inf, 1.0) == math.inf  # an open-ended bound admits it
    assert check_float("x", -3.5) == -3.5


@pytest.mark.parametrize(
    ("value", "check", "problem"),
    [
        (-0.1, check_duration, ">= 0"),
        (0, partial(check_duration, positive=True), "> 0"),
        (61, partial(check_duration, high=60.0), "in [0, 60]"),
        (math.inf, check_duration, ">= 0"),
        (math.nan, partial(check_duration, high=60.0), "in [0, 60]"),
        ("5m", check_duration, ">= 0"),
    ],
)
def test_check_duration_refuses(value: object, check: Check, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check("max_wait", value)
    expected = f"must be a duration in seconds {problem}, got {value!r}"
    assert (caught.value.field, caught.value.problem) == ("max_wait", expected)


def test_check_duration_passes_seconds_as_a_float() -> None:
    assert check_duration("max_wait", 0) == 0.0
    assert check_duration("max_wait", 60, high=60.0) == 60.0
    assert check_duration("interval", 0.001, positive=True) == 0.001


def outcome(check: Callable[[], float]) -> float | ConfigError:
    try:
        return check()
    except ConfigError as error:
        return error


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=3)))
def test_a_value_either_passes_unchanged_or_is_a_config_error(value: object) -> None:
    checks: list[Callable[[], float]] = [
        lambda: check_int("f", value, 0, 100),
        lambda: check_float("f", value, 0.0, 1.0),
        lambda: check_duration("f", value, high=60.0),
    ]
    for result in map(outcome, checks):
        if isinstance(result, ConfigError):
            assert result.field == "f"
            assert repr(value) in result.problem  # the message names the value
        else:
            assert result == value
            assert not isinstance(value, bool)
