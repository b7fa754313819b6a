"""Parsing of human units in config: durations ("250ms", "5m", "1h") and sizes ("256MB")."""

from __future__ import annotations

import re

__all__ = ["DURATION_PATTERN", "parse_bytes", "parse_duration"]

DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: str | float) -> float:
    """Seconds from a number (already seconds) or a string such as ``"1.5s"`` or ``"10m"``.

    >>> parse_duration("250ms")
    0.25
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '250ms', '5m' or '1h', got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"expected a duration such as 30, '250ms', '5m' or '1h', got {value!r}"
            )
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"expected a duration >= 0, got {value!r}")
    return seconds


def parse_bytes(value: str | int) -> int:
    """Bytes from an int or a string such as ``"256MB"`` (1000-based) or ``"1GiB"`` (1024-based).

    >>> parse_bytes("2KiB")
    2048
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576, '256MB' or '1GiB', got a boolean")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"expected a size such as 1048576, '256MB' or '1GiB', got {value!r}")
        unit = (match.group(2) or "").lower()
        base = 1024 if "i" in unit else 1000
        size = int(float(match.group(1)) * base ** _POWERS[unit[:1] if unit[:1] != "b" else ""])
    if size < 0:
        raise ValueError(f"expected a size >= 0, got {value!r}")
    return size
