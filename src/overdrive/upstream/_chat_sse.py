"""When a streamed chat completion may be stored: the chat API's stream rule, in one place.

A chat-completions stream is server-sent events: ``data: {chunk}`` events,
then the terminal ``data: [DONE]``. It is complete and clean, fit to store
and replay as a cache hit, only when that terminal event arrived and no
event before it reported an error:

- a ``data:`` object with a non-null ``error`` member (OpenAI's mid-stream
  error) or ``"object": "error"`` (vLLM and others), or data that cannot be
  read as JSON yet mentions ``"error"``;
- an event of type ``error`` (``event: error``).

A body that stops before ``[DONE]`` was cut short (a truncated stream). An
event counts once a blank line ends it, as the SSE standard says, so a
``[DONE]`` whose line was cut off does not complete anything. The error
event itself still reaches the client: this only decides what is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .._json import JSONDecodeError, loads

__all__ = ["chat_stream_complete", "is_error_event"]

_DONE = b"[DONE]"
_LINE_ENDS = (b"\n", b"\r")


def chat_stream_complete(chunks: Iterable[bytes]) -> bool:
    """True if the streamed chat body ended with ``[DONE]`` and carried no error event.

    Chunk boundaries do not matter, even inside a line:

    >>> chat_stream_complete([b'data: {"choices": []}\\n\\nda', b'ta: [DONE]\\n\\n'])
    True
    >>> chat_stream_complete([b'data: {"error": {"message": "overloaded"}}\\n\\n',
    ...                       b'data: [DONE]\\n\\n'])
    False
    >>> chat_stream_complete([b'data: {"choices": []}\\n\\n'])  # truncated
    False
    """
    for kind, data in sse_events(b"".join(chunks)):
        if kind == b"error" or _reports_error(data):
            return False
        if data == _DONE:
            return True
    return False


def sse_events(body: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(event type, data)`` for each event of an SSE body that a blank line ended."""
    if not body.endswith(_LINE_ENDS):
        body = body[: max(body.rfind(b"\n"), body.rfind(b"\r")) + 1]  # a cut-off last line
    kind, data = b"message", list[bytes]()
    for line in body.splitlines():
        if not line:
            if data:
                yield kind, b"\n".join(data)
            kind, data = b"message", []
            continue
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            data.append(value)
        elif name == b"event":
            kind = value
        # Comments (": ...") and the id and retry fields say nothing about success.


def _reports_error(data: bytes) -> bool:
    if b'"error"' not in data:  # the common case, without parsing every chunk's JSON
        return False
    try:
        payload: Any = loads(data)
    except JSONDecodeError:
        return True  # unreadable, and about an error: not worth replaying
    return is_error_event(payload)


def is_error_event(payload: Any) -> bool:
    """Whether one parsed ``data:`` payload reports an error instead of a chunk."""
    if not isinstance(payload, dict):
        return False
    return payload.get("error") is not None or payload.get("object") == "error"
