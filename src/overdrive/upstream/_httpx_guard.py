"""httpx's connections to an upstream, reused only after an answer that ended where its read did.

httpcore gives a kept-alive connection to the next request once h11 is done
with the last answer and the socket has nothing more to read. Bytes that
came behind the answer in the same read are neither: h11 keeps them and
parses them as the *next* request's answer, another caller's (maybe another
tenant's). httpcore has no public hook for h11's ``trailing_data``
(encode/httpcore#872), so the guard sits in the one place it lets us in, the
network backend: every byte httpcore reads also goes through an llhttp
parser (as the lean client parses), and once an answer is followed by bytes
in the same read the stream says it is readable, which is what makes
httpcore close an idle connection instead of reusing it.

The observer keeps no bytes (llhttp keeps its place, nothing else), so
it costs a parse of what was read, in C, and no buffer.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import httpcore
import httptools
import httpx

__all__ = ["guarded_transport"]


def guarded_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go unused after any bytes behind an answer.

    Not for proxies: given a transport, httpx no longer reads them from the
    environment (the caller leaves httpx its own transport then).
    """
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx has no argument for the network backend: the pool it made is
    # replaced by one built as httpx builds it, with the guard as its backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_GuardedBackend(httpcore.AnyIOBackend()),
    )
    return transport


class _BytesBehind(Exception):
    """Raised in a parser callback to stop llhttp: the connection is spoiled already."""


class _Framing:
    """Follows the answers on one connection; ``misframed`` once one is not clean."""

    __slots__ = ("_complete", "_final", "_parser", "misframed")

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._complete = False  # the answer to the last request has ended
        self._final = False  # the answer being parsed is not an interim (1xx) one
        self.misframed = False

    def request_sent(self) -> None:
        self._complete = False

    def feed(self, data: bytes) -> None:
        if self.misframed:
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.misframed = True  # h11 judges the answer itself; this is about the connection

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # an answer (or garbage) behind the last one, in the same read
            self.misframed = True
            raise _BytesBehind

    def on_headers_complete(self) -> None:
        self._final = self._parser.get_status_code() >= 200

    def on_message_complete(self) -> None:
        if self._final:
            self._complete = True


class _GuardedStream(httpcore.AsyncNetworkStream):
    """A socket stream that reports itself readable once its framing went wrong."""

    __slots__ = ("_framing", "_stream")

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._framing = _Framing()

    # httpcore's signatures, timeout arguments included (ASYNC109).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._stream.read(max_bytes, timeout)
        self._framing.feed(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._framing.request_sent()
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        # Answers come through TLS from now on: a new guard follows the decrypted bytes.
        return _GuardedStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> object:
        # httpcore asks "is_readable" of an idle connection before reusing it:
        # readable means closed, or about to be; either way it is not reused.
        if info == "is_readable" and self._framing.misframed:
            return True
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens connections through ``backend``, each behind a :class:`_GuardedStream`."""

    __slots__ = ("_backend",)

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _GuardedStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return _GuardedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
