"""Byte sources for :func:`chunks`: what can be read, and how to read it without blocking.

Two shapes come out of :func:`open_source`:

* a :class:`Reader` (paths and file objects): the chunker asks for exactly
  the bytes it needs next, so nothing is read ahead of the consumer;
* an async iterator of pieces (bytes, iterables, HTTP bodies): pieces arrive
  in whatever sizes the producer chose and are pulled one at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import IO, Protocol, TypeAlias

from .._errors import RequestError
from ._base import items_of

__all__ = [
    "AsyncReadable",
    "ByteSource",
    "HTTPBody",
    "Readable",
    "Reader",
    "describe",
    "open_source",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview


class Readable(Protocol):
    """A binary file object: ``open(path, "rb")``, ``io.BytesIO``, a socket file."""

    def read(self, size: int, /) -> bytes: ...


class AsyncReadable(Protocol):
    """An object with an async ``read(n)``, e.g. ``asyncio.StreamReader``."""

    def read(self, size: int, /) -> Awaitable[bytes]: ...


class HTTPBody(Protocol):
    """A streamed HTTP response: ``httpx.Response`` from ``client.stream(...)``."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


ByteSource: TypeAlias = (
    str
    | os.PathLike[str]
    | BytesLike
    | HTTPBody
    | AsyncReadable
    | Readable
    | AsyncIterable[BytesLike]
    | Iterable[BytesLike]
)


class Reader(Protocol):
    """What the chunker reads paths and file objects through: ``read(n)`` up to n bytes."""

    async def read(self, size: int) -> bytes: ...

    async def aclose(self) -> None: ...


def open_source(source: ByteSource) -> Reader | AsyncIterator[object]:
    """The reader or piece iterator for ``source``; a RequestError when it is no byte source."""
    if isinstance(source, bytes | bytearray | memoryview):
        return items_of([source])
    if isinstance(source, str | os.PathLike):
        return PathReader(os.fspath(source))
    body = getattr(source, "aiter_bytes", None)  # httpx.Response, duck-typed
    if callable(body):
        return items_of(body())
    read = getattr(source, "read", None)  # before iteration: files iterate lines
    if callable(read):
        if inspect.iscoroutinefunction(read):
            return AsyncFileReader(read)
        return FileReader(read, threaded=not isinstance(source, io.BytesIO))
    if isinstance(source, AsyncIterable | Iterable):
        return items_of(source)
    raise RequestError(
        "source",
        f"cannot stream a {type(source).__name__}; pass a path, bytes, a binary file, "
        "an httpx.Response or a (async) iterable of bytes",
    )


def describe(source: object) -> str:
    """A short name for ``source`` in a repr (never its content)."""
    if isinstance(source, str | os.PathLike):
        return f"path {os.fspath(source)!r}"
    if isinstance(source, bytes | bytearray | memoryview):
        return f"{type(source).__name__} of {memoryview(source).nbytes} bytes"
    return type(source).__name__


class PathReader:
    """Reads a file by path in worker threads, never the whole file at once.

    The file is opened by the first read, in the worker thread, and closed by
    ``aclose`` under the same lock as reads: a read still running in a thread
    after its caller was cancelled finishes before the file is closed.
    """

    __slots__ = ("_closed", "_file", "_lock", "_path")

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def read(self, size: int) -> bytes:
        return await asyncio.to_thread(self._read, size)

    def _read(self, size: int) -> bytes:
        with self._lock:
            if self._closed:
                return b""
            if self._file is None:
                self._file = open(self._path, "rb")  # noqa: SIM115 - closed by aclose
            return self._file.read(size)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._file else "not opened"
        return f"PathReader({self._path!r}, {state})"


class FileReader:
    """Reads a caller's binary file object; in a worker thread unless it is in memory."""

    __slots__ = ("_read", "_threaded")

    def __init__(self, read: Callable[[int], bytes], *, threaded: bool) -> None:
        self._read = read
        self._threaded = threaded

    async def read(self, size: int) -> bytes:
        if self._threaded:
            return await asyncio.to_thread(self._read, size)
        return self._read(size)

    async def aclose(self) -> None:
        """Nothing to close: the file belongs to the caller."""

    def __repr__(self) -> str:
        return f"FileReader(threaded={self._threaded})"


class AsyncFileReader:
    """Reads an object with an async ``read(n)``, such as ``asyncio.StreamReader``."""

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[int], Awaitable[bytes]]) -> None:
        self._read = read

    async def read(self, size: int) -> bytes:
        return await self._read(size)

    async def aclose(self) -> None:
        """Nothing to close: the object belongs to the caller."""

    def __repr__(self) -> str:
        return "AsyncFileReader()"
