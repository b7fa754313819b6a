"""The usage a streamed answer reports, read as its chunks go by.

Every API streams its usage in some event: chat in the last chunk (when the
call asked for it with ``stream_options.include_usage``), Responses in
``response.completed``'s ``response``, Messages split over
``message_start``'s ``message`` (the input) and ``message_delta`` (the
output so far). :class:`StreamUsage` merges every ``usage`` object it finds
at an event's top level or under its ``response`` or ``message``, later
counts over earlier ones, into one payload shaped like a whole answer's
(``{"usage": {...}}``), which the call's adapter then reads as it reads a
whole answer.

Only complete events (a blank line ended them) count, and only those whose
data mentions ``"usage"`` are parsed, so a long stream costs a substring
search per event, not a JSON parse.

>>> usage = StreamUsage()
>>> usage.feed(b'data: {"choices": []}\\n\\ndata: {"usage": {"prompt_')
>>> usage.feed(b'tokens": 9, "completion_tokens": 4}}\\n\\ndata: [DONE]\\n\\n')
>>> usage.payload()
{'usage': {'prompt_tokens': 9, 'completion_tokens': 4}}
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._json import JSONDecodeError, loads
from ._sse import sse_events

__all__ = ["StreamUsage", "hide_usage_events"]

_USAGE = b'"usage"'
# Where an event nests the object whose usage it reports.
_HOLDERS = ("response", "message")


class StreamUsage:
    """Feed it a stream's chunks in order; :meth:`payload` is the usage they reported."""

    __slots__ = ("_counts", "_tail")

    def __init__(self) -> None:
        self._tail = b""  # the event not ended yet (the body's bound caps it)
        self._counts: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        buffered = self._tail + chunk if self._tail else chunk
        end = _events_end(buffered)
        if end < 0:
            self._tail = buffered
            return
        complete, self._tail = buffered[:end], buffered[end:]
        if _USAGE in complete:
            for _, data in sse_events(complete):
                if _reports_usage(data):
                    self._read(data)

    def _read(self, data: bytes) -> None:
        try:
            event = loads(data)
        except JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        for holder in (event, *(event.get(name) for name in _HOLDERS)):
            usage = holder.get("usage") if isinstance(holder, dict) else None
            if isinstance(usage, dict):
                self._counts.update(usage)

    def payload(self) -> dict[str, Any] | None:
        """``{"usage": ...}`` as a whole answer carries it, or None if no event reported one."""
        return {"usage": dict(self._counts)} if self._counts else None

    def __repr__(self) -> str:
        return f"StreamUsage(counts={self._counts!r}, pending={len(self._tail)} bytes)"


def _events_end(body: bytes) -> int:
    """Where the last complete event of ``body`` ends (after its blank line); -1 if none did."""
    lf, crlf = body.rfind(b"\n\n"), body.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1)


def _reports_usage(data: bytes) -> bool:
    """Whether an event may carry counts: chat chunks say ``"usage": null`` until the last."""
    if _USAGE not in data:
        return False
    return data.count(_USAGE) > 1 or not (b'"usage":null' in data or b'"usage": null' in data)


# An event and the blank line that ends it.
_EVENT = re.compile(rb"(.*?(?:\r\n\r\n|\n\n))", re.DOTALL)


async def hide_usage_events(
    chunks: AsyncIterator[bytes], is_usage_event: Callable[[Any], bool]
) -> AsyncIterator[bytes]:
    """``chunks`` without the events ``is_usage_event`` picks: the usage a caller did not ask for.

    Bytes pass on as soon as the event they belong to is complete; only an
    unfinished event waits for its end (and goes as it is if the stream stops).
    """
    tail = b""
    async for chunk in chunks:
        buffered = tail + chunk if tail else chunk
        end = _events_end(buffered)
        if end < 0:
            tail = buffered
            continue
        complete, tail = buffered[:end], buffered[end:]
        kept = _without(complete, is_usage_event) if _USAGE in complete else complete
        if kept:
            yield kept
    if tail:
        yield tail


def _without(events: bytes, is_usage_event: Callable[[Any], bool]) -> bytes:
    return b"".join(
        event for event in _EVENT.findall(events) if not _is_usage(event, is_usage_event)
    )


def _is_usage(event: bytes, is_usage_event: Callable[[Any], bool]) -> bool:
    if _USAGE not in event:
        return False
    for _, data in sse_events(event):
        try:
            return is_usage_event(loads(data))
        except JSONDecodeError:
            return False
    return False
