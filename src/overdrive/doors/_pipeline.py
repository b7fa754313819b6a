"""What a door needs of the engine: the pipeline's three entry points.

The doors sit below :class:`~overdrive.Overdrive` (which hands them out, as
``od.http_client()`` does), so they know the engine only by this protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._calls import Call, Result
    from ..coalesce import StreamReply

__all__ = ["Pipeline"]


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
