"""Upstreams, outbound only: endpoints, their clients, pacing and slots, retries."""

from __future__ import annotations

from ._cache_hints import CacheHints
from ._client import AnswerBounds, UpstreamClient, read_within
from ._dispatch import Dispatcher, Exchange
from ._routing import build_router
from ._send import Sender, falls_back
from ._upstream import Upstream, auth_headers, limiters_for

__all__ = [
    "AnswerBounds",
    "CacheHints",
    "Dispatcher",
    "Exchange",
    "Sender",
    "Upstream",
    "UpstreamClient",
    "auth_headers",
    "build_router",
    "falls_back",
    "limiters_for",
    "read_within",
]
