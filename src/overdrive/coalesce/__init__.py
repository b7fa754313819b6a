"""Coalescing, in one home: identical calls in flight share one piece of work.

In process (``Coalescer`` for coroutines, ``ThreadFlight`` for threads),
streamed (``SharedStream`` under ``StreamFlight``: readers join one upstream
stream), and across processes (``RedisLease``: one process computes, the
others read the answer back from the shared cache).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._coalesce import Coalescer
from ._relay import FilteredReply, Hop, RelayedReply
from ._shared_stream import StreamReader
from ._stream_flight import Settlement, StreamFlight, StreamReply, replay, sse_lines
from ._threadflight import ThreadFlight

if TYPE_CHECKING:
    from ._lease import RedisLease

__all__ = [
    "Coalescer",
    "FilteredReply",
    "Hop",
    "RedisLease",
    "RelayedReply",
    "Settlement",
    "StreamFlight",
    "StreamReader",
    "StreamReply",
    "ThreadFlight",
    "replay",
    "sse_lines",
]


def __getattr__(name: str) -> Any:
    """Load the lease on first use: redis-py is the optional extra ``overdrive[redis]``."""
    if name != "RedisLease":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import _lease
    except ImportError as exc:
        raise ImportError(
            f"{name} needs redis-py: pip install 'overdrive[redis]' ({exc})"
        ) from None
    return _lease.RedisLease
