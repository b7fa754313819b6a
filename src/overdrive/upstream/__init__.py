"""Upstreams, outbound only: endpoints, their clients, pacing and slots, retries."""

from __future__ import annotations

from ._dispatch import Dispatcher, Exchange
from ._upstream import Upstream, limiters_for

__all__ = ["Dispatcher", "Exchange", "Upstream", "limiters_for"]
