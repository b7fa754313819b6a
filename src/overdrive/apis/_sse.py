"""Server-sent events, as the adapters read a streamed answer they decide to keep or not.

Only events a blank line ended count, as the SSE standard says: a stream cut
in the middle of an event never completes anything, whatever that event
would have said.

>>> list(sse_events(b"event: response.completed\\ndata: {}\\n\\nevent: error\\ndata: {"))
[(b'response.completed', b'{}')]
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["sse_events"]

_LINE_ENDS = (b"\n", b"\r")


def sse_events(body: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(event type, data)`` for each event of an SSE body that a blank line ended.

    An event without an ``event:`` line is of type ``message``; the data of
    several ``data:`` lines is joined with newlines.

    >>> list(sse_events(b"event: error\\ndata: {}\\n\\ndata: cut"))
    [(b'error', b'{}')]
    """
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
