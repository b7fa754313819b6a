"""The one JSON codec (orjson): fast, strict, bytes in and out.

The names are orjson's own functions, not wrappers: every call passes through
here a few times, and a Python frame around a C call costs as much as a
small document's encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["JSONDecodeError", "dumps", "dumps_canonical", "loads"]

JSONDecodeError = orjson.JSONDecodeError

dumps: Callable[[Any], bytes] = orjson.dumps
loads: Callable[[bytes | bytearray | memoryview | str], Any] = orjson.loads
# Stable bytes for hashing: sorted keys, no whitespace.
dumps_canonical: Callable[[Any], bytes] = functools.partial(
    orjson.dumps, option=orjson.OPT_SORT_KEYS
)
