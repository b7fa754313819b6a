"""What an upstream answered: a whole answer read already, or a stream's ``httpx.Response``.

The dispatcher, the engine and the stream flight read an answer through
:class:`UpstreamResponse`, the part of ``httpx.Response`` they use, and what
every :class:`~overdrive.upstream._client.UpstreamClient` answers. A whole
answer is a :class:`WireResponse`, which has exactly that part, whichever
client read it: building a real ``httpx.Response`` costs more than the rest
of the lean client's work on a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Protocol

__all__ = ["UpstreamResponse", "WireHeaders", "WireResponse"]


class UpstreamResponse(Protocol):
    """The part of ``httpx.Response`` read from an upstream's answer."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class WireHeaders(Mapping[str, str]):
    """Response headers; names are kept lower-cased and looked up in any case (as httpx's).

    A header sent more than once reads as its values joined by ``", "``.

    >>> headers = WireHeaders({"retry-after": "2"})
    >>> headers["Retry-After"], "RETRY-AFTER" in headers, headers.get("x-absent")
    ('2', True, None)
    """

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items  # keys already lower-case: the parser lowers them once

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        # Overridden: Mapping's own goes through a KeyError for every absent name.
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"WireHeaders({self._items!r})"


class WireResponse:
    """A complete answer read by the lean client; closing or reading it again is free."""

    __slots__ = ("content", "headers", "http_version", "status_code")

    def __init__(
        self, status_code: int, headers: WireHeaders, content: bytes, http_version: str
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.http_version = http_version

    async def aread(self) -> bytes:
        return self.content

    async def aclose(self) -> None:
        """Nothing to release: the connection went back to its pool with the last byte."""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self.content:
            yield self.content

    def __repr__(self) -> str:
        return (
            f"WireResponse({self.status_code}, HTTP/{self.http_version}, {len(self.content)} bytes)"
        )
