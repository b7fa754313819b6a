from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from overdrive.gateway import GatewayApp, GatewayServer
from overdrive.gateway._protocol import OneWriteTransport


class RecordingTransport(asyncio.Transport):
    """Keeps every write it is given, as separate system calls would send them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_head_and_body_written_in_one_turn_leave_as_one_write() -> None:
    inner = RecordingTransport()
    transport = OneWriteTransport(inner)
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await next_turn()
    assert len(inner.writes) == 1  # the scheduled flush found nothing left


async def test_a_lone_write_goes_out_on_the_next_turn() -> None:
    inner = RecordingTransport()
    transport = OneWriteTransport(inner)
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 100 Continue\r\n\r\n")
    await next_turn()
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert transport.get_write_buffer_size() == 0


async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    inner = RecordingTransport()
    transport = OneWriteTransport(inner)
    transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    transport.close()
    assert inner.writes == [b"HTTP/1.1 400 Bad Request\r\n\r\n"]
    assert inner.closed

    other = RecordingTransport()
    transport = OneWriteTransport(other)
    transport.write(b"partial")
    transport.abort()
    await next_turn()
    assert other.writes == []
    assert other.aborted


async def test_nothing_is_written_once_the_peer_is_gone() -> None:
    inner = RecordingTransport()
    transport = OneWriteTransport(inner)
    transport.write(b"late")
    inner.closed = True  # the connection was lost before the flush
    await next_turn()
    assert inner.writes == []


@pytest.fixture
def gateway() -> Iterator[GatewayServer]:
    # Health and unknown paths never reach the upstream: any address will do.
    config = {"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "models": ["m"]}]}
    with GatewayServer(GatewayApp(config)) as server:
        yield server


def test_pipelined_requests_get_whole_answers_in_order(gateway: GatewayServer) -> None:
    requests = b"".join(
        b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n"
        if i % 2 == 0
        else b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n"
        for i in range(4)
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(requests)
        received = b""
        while received.count(b"HTTP/1.1 ") < 4 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the gateway closed early after {received!r}"
            received += chunk
    statuses = [part.split(b" ", 1)[0] for part in received.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"404", b"200", b"404"]
    assert b'{"status":"live"}' in received
