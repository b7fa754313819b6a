"""The one base of the upstream clients, and the bounds every one of them reads within.

An :class:`~overdrive.upstream.Upstream` holds its client behind
:class:`UpstreamClient` and sends without asking which one it has (as httpx's
``AsyncBaseTransport`` stands between its client and the network). Two
implement it, and ``Upstream`` picks one per endpoint:

* :class:`~overdrive.upstream._wire.WireClient`, the lean HTTP/1.1 client: it
  reads every answer whole, so streams and probes go on through the httpx
  client it is given;
* :class:`~overdrive.upstream._httpx_client.HttpxClient`: httpx, its
  connections behind the framing guard (``_httpx_guard.py``); for every call
  where the lean client does not apply (a proxy, credentials in the URL, an
  injected transport).

Either raises what httpx raises when the exchange fails (an
``httpx.TransportError``: the dispatcher's retry rules see no difference),
and :class:`~overdrive.UpstreamProtocolError` for an answer over its
:class:`AnswerBounds`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from .._errors import UpstreamProtocolError
from ._wire_response import UpstreamResponse

__all__ = ["AnswerBounds", "UpstreamClient", "read_within"]


class UpstreamClient(ABC):
    """Sends POSTs and probes to one endpoint, over connections it pools; paths are relative.

    >>> async def ask(client: UpstreamClient) -> bytes:  # doctest: +SKIP
    ...     response = await client.post("/chat/completions", b'{"model": "m", ...}')
    ...     return response.content  # read already, within the bounds
    """

    __slots__ = ()

    @abstractmethod
    async def post(self, path: str, body: bytes) -> UpstreamResponse:
        """POST ``body`` (JSON) to ``path``: the whole answer, read within the bounds.

        Closing the answer is optional: its connection is back in the pool already.
        """

    @abstractmethod
    async def stream(self, path: str, body: bytes) -> UpstreamResponse:
        """POST ``body`` (JSON) to ``path``: the answer once its head is in, the body unread.

        The caller reads the body (within the bounds: :func:`read_within`) and closes it.
        """

    @abstractmethod
    async def probe(self, path: str, max_wait: float) -> bool:
        """GET ``path``: True if it answered below 500 within ``max_wait`` seconds.

        The status is all a probe needs: the body is never read, so no health
        page can cost memory; a failed exchange is False, not an error.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the idle connections; busy ones close as their answers end."""

    async def close_idle(self) -> None:  # noqa: B027 (most clients pool nothing loop-bound)
        """Close the idle connections now, their event loop ending; the client stays usable."""

    async def forget_loop(self) -> None:  # noqa: B027
        """The loop the pooled connections were made on is gone: go on afresh on this one."""


@dataclass(frozen=True, slots=True)
class AnswerBounds:
    """What one upstream may send back, and the errors that name it when it sends more."""

    upstream: str  # its configured name, for the errors
    head_bytes: int = 64 * 1024  # status line and headers, interim (1xx) answers included
    body_bytes: int = 64 * 1024 * 1024

    def head_error(self) -> UpstreamProtocolError:
        limit = self.head_bytes
        return UpstreamProtocolError(
            self.upstream, f"its answer's head is over max_response_head_bytes ({limit} bytes)"
        )

    def body_error(self, announced: int | None = None) -> UpstreamProtocolError:
        what = "its answer's body is" if announced is None else f"it announced {announced} bytes,"
        limit = self.body_bytes
        return UpstreamProtocolError(
            self.upstream, f"{what} over max_response_bytes ({limit} bytes)"
        )


async def read_within(response: UpstreamResponse, bounds: AnswerBounds) -> bytes:
    """A whole body, refused (:meth:`AnswerBounds.body_error`) once over ``bounds``."""
    chunks: list[bytes] = []
    left = bounds.body_bytes
    async for chunk in response.aiter_bytes():
        left -= len(chunk)
        if left < 0:
            raise bounds.body_error()
        chunks.append(chunk)
    return b"".join(chunks)
