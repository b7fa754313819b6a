"""The small ASGI vocabulary the raw apps share (the sim, the gateway): types, body, headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "BodyTooLarge",
    "ClientGone",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "header",
    "read_body",
]

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client hung up; there is nobody left to answer."""


class BodyTooLarge(Exception):
    """The request body is over ``limit`` bytes; the rest of it was not read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body over {limit} bytes")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused as soon as it is known to exceed ``limit``.

    A declared ``content-length`` over the limit is refused before anything
    is read; a chunked body is counted as it comes.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None
