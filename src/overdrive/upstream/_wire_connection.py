"""One HTTP/1.1 connection of the lean client: an asyncio protocol parsed by httptools (llhttp).

The pool (``_wire.py``) hands a connection one request at a time and gets it
back after the answer; everything about reading that answer is here.

A connection is reused only after an answer that was framed exactly: one
final answer to the one request out, then nothing. Bytes nobody asked for
(while idle, or behind the answer in the same read), a 1xx then the close,
a 101, a status that is no HTTP status, a parse error or a body cut short
fail the exchange with a retryable ``httpx.RemoteProtocolError`` and close
the connection: the next caller, maybe another tenant, must never read the
rest of someone else's answer as its own. An answer's head and body are
bounded (:class:`~overdrive.upstream._client.AnswerBounds`); over either,
the exchange fails with :class:`~overdrive.UpstreamProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import NoReturn, cast

import httptools
import httpx

from ._client import AnswerBounds
from ._wire_response import WireHeaders, WireResponse

__all__ = ["StaleConnectionError", "WireConnection"]


class StaleConnectionError(httpx.RemoteProtocolError):
    """A kept-alive connection closed by the server before any byte of the answer."""


class _StopParsing(Exception):
    """Raised in a parser callback once the exchange has failed: llhttp stops at that byte."""


class WireConnection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time; the pool owns it.

    An exchange's state is reset when a request goes out. That is sound only
    because a connection goes back to the pool solely after an answer that
    ended exactly where its read ended (``keep_alive`` never turns true again
    once false): the parser then sits between messages.
    """

    __slots__ = (
        "_body",
        "_body_left",
        "_bounds",
        "_complete",
        "_deadline",
        "_headers",
        "_interim",
        "_loop",
        "_lost_hook",
        "_parser",
        "_received",
        "_status",
        "_timer",
        "_transport",
        "_waiter",
        "dropped",
        "generation",
        "idle",
        "keep_alive",
        "lost",
        "requests",
    )

    def __init__(self, lost_hook: Callable[[WireConnection], None], bounds: AnswerBounds) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the transport's
        self._waiter: asyncio.Future[WireResponse] | None = None
        # One timer outlives its request: it fires at the deadline it was set
        # for, and if a later request is out by then, re-arms for that one's.
        # Setting and cancelling a timer per request would cost more than a
        # small answer's whole parse.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # the current request's, on the loop's clock
        self._lost_hook = lost_hook
        self._bounds = bounds
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_left = bounds.body_bytes
        self._status = 0  # the final answer's, once its head is complete
        self._complete = False  # the final answer's last byte is parsed
        self._received = 0  # bytes of the current exchange
        self._interim = 0  # about the bytes of its interim (1xx) heads
        self.keep_alive = True  # once false, false for good
        self.requests = 0  # answered on this connection
        self.idle = False  # on the pool's idle stack
        self.dropped = False  # its slot is back in the pool
        self.generation = 0  # the pool's, when it was made (see WirePool.forget_loop)
        self.lost = False

    @property
    def usable(self) -> bool:
        transport = self._transport
        return self.keep_alive and transport is not None and not transport.is_closing()

    def send(self, message: bytes, timeout: float) -> asyncio.Future[WireResponse]:
        """Write the request; the future gets the answer, or the error that ended it."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._received = self._interim = 0
        self._status = 0  # nothing of this answer yet (the last one's is done with)
        self._complete = False
        self._body_left = self._bounds.body_bytes
        if self.lost:  # closed since it was handed out: fail now, not at the timeout
            self._ended(None)
            return waiter
        self._deadline = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._time_out, timeout)
        self._transport.write(message)
        return waiter

    def close(self) -> None:
        # abort, not close: nothing of ours is left to flush, and a TLS close
        # would wait for the peer's close_notify.
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._loop is not None and self._loop.is_closed():
            self._shut()
            return
        transport.abort()

    def _shut(self) -> None:
        """Its loop closed without closing it: tell the peer, as the loop no longer can.

        asyncio cannot close a transport of a closed loop; shutting the socket
        down ends the connection for the server now, and the descriptor goes
        with the transport.
        """
        self.lost = True
        self.keep_alive = False
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # a server speaking out of turn: never reuse this
            self.keep_alive = False
            self.close()
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._waiter is not None:  # else a callback failed it and stopped the parser
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
            return
        # Settled here, after the whole read: bytes behind the answer fail it.
        if self._complete:
            self._finish()
        elif not self._status and self._received > self._bounds.head_bytes:
            self._fail(self._bounds.head_error())  # everything so far is head

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.lost = True
        self.keep_alive = False
        if self._waiter is not None:
            self._ended(exc)
        self._lost_hook(self)

    # httptools callbacks: raising _StopParsing stops llhttp at the current byte

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer (or garbage) behind the first, in one read
            self._stop(httpx.RemoteProtocolError("bytes after the complete answer"))
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        limit = self._bounds.head_bytes
        # Only an exchange this big so far can have a head over the bound:
        # the common small answer skips the sum.
        if self._received > limit and self._interim + _head_size(self._headers) > limit:
            self._stop(self._bounds.head_error())
        if 200 <= status < 600:
            self._final(status)
        elif status == 101 or not 100 <= status < 200:
            # We never ask to switch protocols; llhttp takes any 3 digits (0 too).
            self._stop(httpx.RemoteProtocolError(f"answered with status {status}"))
        else:  # interim (100 Continue, 103 Early Hints): the final answer follows
            self._interim += _head_size(self._headers) + _STATUS_LINE

    def on_body(self, body: bytes) -> None:
        self._body_left -= len(body)
        if self._body_left < 0:
            self._stop(self._bounds.body_error())
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status:  # not an interim answer's end
            self._complete = True

    def _final(self, status: int) -> None:
        self._status = status
        if not self._parser.should_keep_alive():
            self.keep_alive = False
        length = self._headers.get("content-length")  # llhttp checked its digits
        if length is not None and int(length) > self._body_left:
            self._stop(self._bounds.body_error(int(length)))  # refused before reading it

    def _stop(self, error: Exception) -> NoReturn:
        self._fail(error)
        raise _StopParsing

    # ending the current request

    def _finish(self) -> None:
        waiter = self._settle()
        if waiter is not None and not waiter.done():
            headers = WireHeaders(self._headers)
            version = self._parser.get_http_version()
            waiter.set_result(WireResponse(self._status, headers, b"".join(self._body), version))

    def _fail(self, error: Exception) -> None:
        """End the exchange with ``error`` and the connection with it: its state is unknown."""
        self.keep_alive = False
        self.close()
        waiter = self._settle()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _settle(self) -> asyncio.Future[WireResponse] | None:
        waiter, self._waiter = self._waiter, None
        self.requests += 1
        return waiter

    def _time_out(self, timeout: float) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None:  # idle now: the next request arms a timer of its own
            return
        loop = waiter.get_loop()
        if loop.time() < self._deadline:  # set for an earlier request: wait for this one's
            self._timer = loop.call_at(self._deadline, self._time_out, timeout)
            return
        self._fail(httpx.ReadTimeout(f"no complete answer within {timeout:g}s"))

    def _ended(self, exc: Exception | None) -> None:
        """The server closed the connection while a request was out."""
        if self._status and exc is None and not _framed(self._headers):
            self._finish()  # no length given (HTTP/1.0 style): the body runs to the close
        elif not self._received and self.requests:
            self._fail(StaleConnectionError("kept-alive connection closed before answering"))
        else:  # a 1xx then the close lands here too: no final answer came
            reason = f" ({exc})" if exc is not None else ""
            where = "mid-answer" if self._received else "without answering"
            self._fail(httpx.RemoteProtocolError(f"server disconnected {where}{reason}"))

    def __repr__(self) -> str:
        state = "lost" if self.lost else "idle" if self.idle else "busy"
        return f"WireConnection({state}, requests={self.requests})"


def _framed(headers: dict[str, str]) -> bool:
    return "content-length" in headers or "transfer-encoding" in headers


# The shortest status line ("HTTP/1.1 100 \r\n") and the head's closing CRLF.
_STATUS_LINE = 17


def _head_size(headers: dict[str, str]) -> int:
    """About the bytes the headers took on the wire (": " and CRLF each)."""
    return sum(len(name) + len(value) + 4 for name, value in headers.items())
