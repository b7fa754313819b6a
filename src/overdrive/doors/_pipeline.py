"""What a door needs of the engine: the pipeline's three entry points.

The doors sit below :class:`~overdrive.Overdrive` (which hands them out, as
``od.http_client()`` does), so they know the engine only by this protocol.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .._calls import Call, Result
    from ..coalesce import StreamReply
    from ._answer import Answer
    from ._unknown import Passage

__all__ = ["Pipeline"]

T = TypeVar("T")


class Pipeline(Protocol):
    """The engine as a door drives it (``Overdrive`` is one)."""

    def models(self) -> list[str]:
        """Every model the configured upstreams serve."""
        ...

    async def request(self, call: Call) -> Result:
        """Run a complete call through the pipeline."""
        ...

    async def open_stream(self, call: Call) -> StreamReply:
        """Send a streamed call; the caller relays and closes the reply."""
        ...

    async def forward(self, passage: Passage) -> Answer:
        """Send a request no adapter knows to the upstream serving it (never cached)."""
        ...

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``work`` on the engine's event loop, from a thread without one (the sync door)."""
        ...
