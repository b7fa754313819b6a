from __future__ import annotations

import asyncio
import io
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overdrive import RequestError
from overdrive.stream import chunks
from overdrive.stream._sources import ByteSource

Pieces = list[bytes | bytearray | memoryview]


def expected(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def collect(source: ByteSource, size: int, prefetch: int = 0) -> list[bytes]:
    async with chunks(source, size, prefetch=prefetch) as stream:
        return [chunk async for chunk in stream]


async def drain(stream: AsyncIterator[object], into: list[object]) -> None:
    async for item in stream:
        into.append(item)


def cut(data: bytes, points: list[int], kinds: list[int]) -> Pieces:
    """``data`` split at ``points``, as bytes, bytearray or memoryview pieces."""
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(edges)]
    makers: list[Callable[[bytes], bytes | bytearray | memoryview]] = [
        bytes,
        bytearray,
        memoryview,
    ]
    return [makers[kinds[i % len(kinds)] % 3](p) for i, p in enumerate(pieces)]


async def agen(pieces: Pieces) -> AsyncIterator[bytes | bytearray | memoryview]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


class Body(httpx.AsyncByteStream):
    def __init__(self, pieces: Pieces) -> None:
        self.pieces = [bytes(p) for p in pieces]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def stream_reader(pieces: Pieces) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for piece in pieces:
        reader.feed_data(bytes(piece))
    reader.feed_eof()
    return reader


async def run_kind(kind: str, data: bytes, pieces: Pieces, size: int, prefetch: int) -> list[bytes]:
    if kind == "path":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.bin"
            path.write_bytes(data)
            return await collect(path, size, prefetch)
    sources: dict[str, Callable[[], ByteSource]] = {
        "bytes": lambda: data,
        "bytearray": lambda: bytearray(data),
        "memoryview": lambda: memoryview(data),
        "bytesio": lambda: io.BytesIO(data),
        "sync iterable": lambda: pieces,
        "sync generator": lambda: iter(pieces),
        "async iterable": lambda: agen(pieces),
        "httpx response": lambda: httpx.Response(200, stream=Body(pieces)),
        "asyncio reader": lambda: stream_reader(pieces),
    }
    return await collect(sources[kind](), size, prefetch)


KINDS = [
    "bytes",
    "bytearray",
    "memoryview",
    "bytesio",
    "path",
    "sync iterable",
    "sync generator",
    "async iterable",
    "httpx response",
    "asyncio reader",
]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=3000),
    size=st.integers(1, 700),
    points=st.lists(st.integers(0, 3000), max_size=12),
    kinds=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    prefetch=st.sampled_from([0, 0, 1, 3]),
)
def test_every_source_gives_exact_chunks(
    kind: str, data: bytes, size: int, points: list[int], kinds: list[int], prefetch: int
) -> None:
    pieces = cut(data, points, kinds)
    got = asyncio.run(run_kind(kind, data, pieces, size, prefetch))
    assert got == expected(data, size)
    assert all(type(chunk) is bytes for chunk in got)


def test_a_big_file_is_read_in_chunk_sized_blocks_without_copies(tmp_path: Path) -> None:
    data = os.urandom(3 * 65536 + 5)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert asyncio.run(collect(path, 65536)) == expected(data, 65536)
    assert asyncio.run(collect(str(path), 1000)) == expected(data, 1000)


async def test_pieces_of_exactly_one_chunk_pass_through_without_a_copy() -> None:
    pieces = [b"a" * 8, b"b" * 8, b"c" * 8]
    got = await collect(pieces, 8)
    assert all(g is p for g, p in zip(got, pieces, strict=True))


async def test_a_producer_reusing_its_buffer_does_not_corrupt_chunks() -> None:
    def refill() -> Iterator[bytearray]:
        buf = bytearray(3)
        for i in range(5):
            buf[:] = bytes([i]) * 3
            yield buf  # the same object, overwritten each time, like readinto()

    assert await collect(refill(), 2) == expected(b"".join(bytes([i]) * 3 for i in range(5)), 2)


async def test_an_empty_source_gives_no_chunks() -> None:
    assert await collect(b"", 4) == []
    assert await collect([b"", b""], 4) == []
    assert await collect(io.BytesIO(), 4) == []


class CountingFile(io.BytesIO):
    """An in-memory file (read inline, no thread) that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


@pytest.mark.parametrize("size", [65536, 1000])
async def test_a_file_is_read_only_as_the_consumer_takes_chunks(size: int) -> None:
    source = CountingFile(bytes(10 * 65536))
    stream = chunks(source, size)
    taken = 0
    async for chunk in stream:
        taken += len(chunk)
        await asyncio.sleep(0)  # a consumer that takes its time: the reader must wait
        # at most one read block (``size``, or about 64 KiB when size is small) ahead
        assert source.read_bytes - taken < max(size, 65536)
    assert taken == source.read_bytes == 10 * 65536


async def test_an_iterable_is_pulled_one_piece_at_a_time() -> None:
    pulled = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 300
            yield bytes(300)

    taken = 0
    async for chunk in chunks(source(), 1000):
        taken += len(chunk)
        for _ in range(5):
            await asyncio.sleep(0)
        assert pulled - taken < 1000 + 300  # a partial chunk plus the piece that completed it
    assert taken == pulled


@pytest.mark.parametrize("prefetch", [1, 3])
async def test_prefetch_reads_at_most_that_many_chunks_ahead(prefetch: int) -> None:
    size = 65536
    source = CountingFile(bytes(20 * size))
    async with chunks(source, size, prefetch=prefetch) as stream:
        for taken in range(1, 15):
            await anext(stream)
            for _ in range(20):
                await asyncio.sleep(0)  # the pump reads ahead as far as it may
            assert source.read_bytes == (taken + prefetch) * size


async def test_a_source_error_arrives_after_the_chunks_before_it() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"abcde"
        raise ConnectionError("reset by peer")

    for prefetch in (0, 2):
        got: list[object] = []
        with pytest.raises(ConnectionError, match="reset by peer"):
            await drain(chunks(failing(), 2, prefetch=prefetch), got)
        assert got == [b"ab", b"cd"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
@pytest.mark.parametrize("prefetch", [0, 2])
async def test_closing_early_closes_the_file_and_leaves_no_task(
    tmp_path: Path, prefetch: int
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(1 << 20))
    before = open_fds()
    stream = chunks(path, 4096, prefetch=prefetch)
    assert len(await anext(stream)) == 4096
    assert open_fds() == before + 1
    await stream.aclose()
    assert open_fds() == before
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_closing_early_closes_the_consumed_generator() -> None:
    closed = False

    async def source() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            while True:
                yield b"x" * 10
        finally:
            closed = True

    async with chunks(source(), 4, prefetch=1) as stream:
        assert await anext(stream) == b"xxxx"
    assert closed


async def test_a_missing_path_fails_on_the_first_read(tmp_path: Path) -> None:
    stream = chunks(tmp_path / "missing.bin", 16)  # opening is lazy, in a worker thread
    with pytest.raises(FileNotFoundError):
        await anext(stream)


async def test_a_streamed_httpx_response_is_chunked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body([b"hello ", b"streaming ", b"world"]))

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "http://upstream.test/file") as response,
    ):
        assert await collect(response, 4) == expected(b"hello streaming world", 4)


async def test_repr_shows_progress() -> None:
    stream = chunks(b"abcdefg", 3)
    await anext(stream)
    assert repr(stream) == (
        "ChunkStream(bytes of 7 bytes, size=3, prefetch=0, delivered=1 chunks / 3 bytes)"
    )
    assert stream.delivered == (1, 3)
    await stream.aclose()


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "4"])
def test_a_bad_size_is_refused_by_name(size: object) -> None:
    with pytest.raises(RequestError) as caught:
        chunks(b"abc", size)  # type: ignore[arg-type]
    assert caught.value.field == "size"


def test_a_bad_prefetch_is_refused_by_name() -> None:
    with pytest.raises(RequestError, match="prefetch"):
        chunks(b"abc", 1, prefetch=-1)


@pytest.mark.parametrize("source", [42, None, object()])
def test_an_unsupported_source_is_refused_at_once(source: object) -> None:
    with pytest.raises(RequestError, match="cannot stream a") as caught:
        chunks(source, 4)  # type: ignore[arg-type]
    assert caught.value.field == "source"


async def test_text_pieces_are_refused_with_a_hint() -> None:
    with pytest.raises(RequestError, match="produced a str, not bytes"):
        await collect(["text"], 4)  # type: ignore[list-item]
    with pytest.raises(RequestError, match="binary mode"):
        await collect(io.StringIO("text"), 4)  # type: ignore[arg-type]
