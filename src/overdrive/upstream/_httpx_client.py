"""httpx as an :class:`~overdrive.upstream._client.UpstreamClient`: streams, probes, the rest.

It sends what the lean client does not: every stream and probe, and the
whole calls of an endpoint the lean client does not apply to (see
``_upstream.py``). Its transport is the one it is given: httpx's behind the
framing guard (``_httpx_guard.py``), httpx's own (through a proxy), or a
test's. Whole answers come back as the lean client's do, a
:class:`~overdrive.upstream._wire_response.WireResponse` read within the
bounds, so nothing after the client can tell which one sent.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Coroutine, Mapping
from typing import Any

import httpx

from ._client import AnswerBounds, UpstreamClient, read_within
from ._wire_response import UpstreamResponse, WireHeaders, WireResponse

__all__ = ["HttpxClient", "bounded_body"]


class HttpxClient(UpstreamClient):
    """An ``httpx.AsyncClient`` on one base URL, its answers held to ``bounds``.

    >>> limits = httpx.Limits(max_connections=64)
    >>> client = HttpxClient(  # httpx's own transport; Upstream gives it the guarded one
    ...     "http://127.0.0.1:8080/v1",
    ...     bounds=AnswerBounds("local"),
    ...     timeout=60.0,
    ...     limits=limits,
    ...     transport=None,
    ... )
    >>> client
    HttpxClient('http://127.0.0.1:8080/v1/', open)
    """

    __slots__ = ("_bounds", "_http", "_make")

    def __init__(
        self,
        base_url: str,
        *,
        bounds: AnswerBounds,
        timeout: float,
        limits: httpx.Limits,
        transport: httpx.AsyncBaseTransport | None,
        api_key: str | None = None,
        connect_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._bounds = bounds
        # ``headers`` go on every request (an Anthropic upstream's x-api-key and version).
        sent = {"authorization": f"Bearer {api_key}"} if api_key else {}
        sent.update(headers or {})
        # Given no transport, httpx makes its own, and reads a proxy from the environment.
        # A factory: a client's connections belong to one event loop (see close_idle).
        self._make = functools.partial(
            httpx.AsyncClient,
            base_url=base_url,
            headers=sent or None,
            timeout=httpx.Timeout(timeout, connect=connect_timeout or timeout),
            limits=limits,
            transport=transport,
        )
        self._http = self._make()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    async def post(self, path: str, body: bytes) -> UpstreamResponse:
        response = await self._send(path, body)
        try:
            content = await bounded_body(response, self._bounds)
        finally:
            await response.aclose()  # unread (over a bound): httpx closes the connection
        headers = WireHeaders(dict(response.headers.items()))  # names lower-case, joined
        version = response.http_version.removeprefix("HTTP/")
        return WireResponse(response.status_code, headers, content, version)

    async def stream(self, path: str, body: bytes) -> UpstreamResponse:
        response = await self._send(path, body)
        if _head_size(response) > self._bounds.head_bytes:
            await response.aclose()
            raise self._bounds.head_error()
        return response

    async def probe(self, path: str, max_wait: float) -> bool:
        try:
            async with self._http.stream("GET", path, timeout=max_wait) as response:
                return response.status_code < 500  # closed unread: so is its connection
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close_idle(self) -> None:
        """Close the pooled connections (their loop ends, or is gone); go on with a new client.

        A closed loop cannot close its connections any more: httpx forgets
        them, and their sockets go with the garbage collector.
        """
        old, self._http = self._http, self._make()
        with contextlib.suppress(RuntimeError):  # "Event loop is closed"
            await old.aclose()

    async def forget_loop(self) -> None:
        await self.close_idle()

    def _send(self, path: str, body: bytes) -> Coroutine[Any, Any, httpx.Response]:
        request = self._http.build_request(
            "POST", path, content=body, headers={"content-type": "application/json"}
        )
        return self._http.send(request, stream=True)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"HttpxClient({str(self._http.base_url)!r}, {state})"


async def bounded_body(response: httpx.Response, bounds: AnswerBounds) -> bytes:
    """The (decoded) body of an httpx answer, refused once over ``bounds``.

    h11 bounds an incomplete head on its own; the whole head is checked here.
    The body counts as decoded: a small compressed answer cannot unpack to gigabytes.
    """
    if _head_size(response) > bounds.head_bytes:
        raise bounds.head_error()
    return await read_within(response, bounds)


def _head_size(response: httpx.Response) -> int:
    """About the bytes the headers took on the wire (": " and CRLF each)."""
    return sum(len(name) + len(value) + 4 for name, value in response.headers.raw)
