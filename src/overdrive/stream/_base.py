"""What the streams here share: closable async iterators and the sources they consume.

Ownership follows one rule (asyncstdlib's, too): a stream closes the iterator
it consumes, when it ends and when it is closed early, so a pipeline such as
``map(fn, chunks(path, n))`` releases the file as soon as the outer stream is
closed. File objects passed in are never closed; they belong to the caller.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Generator, Iterable
from types import TracebackType
from typing import Generic, Self, TypeAlias, TypeVar

from .._errors import RequestError

__all__ = ["AnyIterable", "Stream", "aclose_consumed", "items_of", "whole_number"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

AnyIterable: TypeAlias = Iterable[T] | AsyncIterable[T]


class Stream(Generic[T_co]):
    """An async iterator over an inner async generator, closable with ``aclose``.

    The generator does the work; wrapping it keeps its cleanup reachable by
    the event loop's async-generator finaliser when a consumer breaks out of
    ``async for`` and drops the stream (``async with`` or ``aclose`` cleans up
    at once).
    """

    __slots__ = ("_agen",)

    def __init__(self, agen: AsyncGenerator[T_co, None]) -> None:
        self._agen = agen

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[T_co]:
        return self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop: cancel work in flight and close what this stream consumes."""
        await self._agen.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def items_of(source: AnyIterable[T]) -> AsyncGenerator[T, None]:
    """The items of a sync or async iterable, closing its iterator at the end or on close."""
    if isinstance(source, AsyncIterable):
        iterator = aiter(source)
        try:
            async for item in iterator:
                yield item
        finally:
            await aclose_consumed(iterator)
    else:
        sync = iter(source)
        try:
            for item in sync:
                yield item
        finally:
            if isinstance(sync, Generator):  # only generators: a file iterates itself
                sync.close()


async def aclose_consumed(iterator: object) -> None:
    """``aclose()`` an async iterator that has one (async generators, streams)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def whole_number(field: str, value: object, minimum: int) -> int:
    """``value`` if it is an int of at least ``minimum``, else a RequestError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field, f"must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise RequestError(field, f"must be at least {minimum}, got {value}")
    return value
