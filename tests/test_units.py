from __future__ import annotations

import pytest

from overdrive._units import parse_bytes, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("1.5s", 1.5), ("5m", 300), ("1h", 3600), (2, 2.0)]
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("256MB", 256_000_000), ("1GiB", 2**30), ("2kib", 2048), ("10", 10), (7, 7)]
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("bad", ["", "fast", "-1s", "1y"])
def test_bad_duration(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["", "big", "1XB", True])
def test_bad_size(bad: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_bytes(bad)
