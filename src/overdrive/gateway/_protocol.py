"""The gateway's HTTP protocol: uvicorn's httptools protocol, each answer in one write.

uvicorn writes an answer's status line and headers, then its body: two
``write`` calls, and uvloop sends each one at once, so two system calls.
On loopback a send also runs the receiver's TCP path, which makes it the
dearest single step of a small answer. :class:`GatewayProtocol` hands
uvicorn a transport that holds a write until the next one (or until the
loop's next turn), so head and body leave together in one system call.

Nothing else about uvicorn changes: parsing, keep-alive, flow control,
timeouts and the graceful drain are its own.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GatewayProtocol", "OneWriteTransport"]


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol, writing through a :class:`OneWriteTransport`.

    >>> uvicorn.run(app, http=GatewayProtocol)  # doctest: +SKIP
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        super().connection_made(OneWriteTransport(cast(asyncio.Transport, transport)))


class OneWriteTransport(asyncio.Transport):
    """A transport whose writes within one turn of the event loop go out as one.

    The first write is held and a flush is scheduled for the loop's next turn;
    a second write in the meantime sends both at once. ``close`` and
    ``write_eof`` send what is held first, ``abort`` drops it, as a transport's
    own buffer would.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def __repr__(self) -> str:
        held = len(self._held) if self._held else 0
        return f"OneWriteTransport(held={held} bytes, {self._transport!r})"
