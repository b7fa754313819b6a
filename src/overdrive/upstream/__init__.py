"""Upstreams: the OpenAI-compatible endpoints, sending with retries, and the httpx door."""

from __future__ import annotations

from ._dispatch import Dispatcher, Exchange
from ._stream_flight import StreamFlight, StreamReply, replay, sse_lines
from ._transport import EngineTransport
from ._upstream import Lease, Upstream, limiters_for

__all__ = [
    "Dispatcher",
    "EngineTransport",
    "Exchange",
    "Lease",
    "StreamFlight",
    "StreamReply",
    "Upstream",
    "limiters_for",
    "replay",
    "sse_lines",
]
