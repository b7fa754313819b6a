"""Does 1 GiB stream through ``overdrive.stream`` in constant memory, and how fast?

Each scenario runs in a fresh subprocess, which samples its resident set size
(``/proc/self/statm``) every 2 ms while it streams and reports the peak growth
over its starting RSS, plus the throughput. The data is 1 GiB of random
bytes, produced as 64 KiB pieces (like an HTTP body) or read from a temporary
file of the same bytes, re-chunked into 1 MiB chunks and consumed by a running
CRC-32, so every scenario can be checked to see the same bytes.

Peers in the same run: re-chunking with ``bytes +=`` (the usual hand-written
loop), httpx's ``ByteChunker`` (what ``aiter_bytes(chunk_size=...)`` uses),
reading everything into memory first, a plain blocking ``f.read`` loop (the
speed ceiling for a file, at the price of blocking the event loop), and for
``stream.map`` an unbounded ``asyncio.gather`` over every chunk. The target
for overdrive is RSS growth under 50 MiB.

Run: ``python benchmarks/bench_stream_memory.py [--total-mb 1024] [--file-mb 1024] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from httpx._decoders import ByteChunker

from overdrive import stream

MiB = 1 << 20
PIECE = 64 * 1024
CHUNK = MiB
TARGET_MIB = 50
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class PeakRSS:
    """Samples RSS in a thread, so peaks inside library calls are seen too."""

    def __init__(self, every: float = 0.002) -> None:
        self.base = self.peak = rss()
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.base


# ---------------------------------------------------------------- the data


def blocks() -> list[bytes]:
    rng = random.Random(7)
    return [rng.randbytes(PIECE) for _ in range(16)]


def pieces(total: int) -> Iterator[bytes]:
    """``total`` bytes as 64 KiB pieces, cycling through 16 random blocks."""
    pool = blocks()
    for i in range(total // PIECE):
        yield pool[i % len(pool)]


async def apieces(total: int) -> AsyncIterator[bytes]:
    for piece in pieces(total):
        yield piece


def write_file(path: Path, total: int) -> None:
    with path.open("wb") as f:
        for piece in pieces(total):
            f.write(piece)


# ---------------------------------------------------------------- scenarios
# Each takes (total bytes, file path) and returns (bytes seen, checksum).


async def od_sync_gen(total: int, path: str) -> tuple[int, int]:
    return await crc_of(stream.chunks(pieces(total), CHUNK))


async def od_async_gen(total: int, path: str) -> tuple[int, int]:
    return await crc_of(stream.chunks(apieces(total), CHUNK))


async def od_file(total: int, path: str) -> tuple[int, int]:
    return await crc_of(stream.chunks(path, CHUNK))


async def od_file_prefetch(total: int, path: str) -> tuple[int, int]:
    return await crc_of(stream.chunks(path, CHUNK, prefetch=2))


async def crc_of(chunks: AsyncIterator[bytes]) -> tuple[int, int]:
    seen = crc = 0
    async for chunk in chunks:
        assert len(chunk) == CHUNK
        seen += len(chunk)
        crc = zlib.crc32(chunk, crc)
    return seen, crc


async def peer_concat(total: int, path: str) -> tuple[int, int]:
    seen = crc = 0
    buf = b""
    for piece in pieces(total):
        buf += piece
        while len(buf) >= CHUNK:
            chunk, buf = buf[:CHUNK], buf[CHUNK:]
            seen, crc = seen + len(chunk), zlib.crc32(chunk, crc)
    return seen, crc


async def peer_httpx(total: int, path: str) -> tuple[int, int]:
    seen = crc = 0
    chunker = ByteChunker(CHUNK)
    for piece in pieces(total):
        for chunk in chunker.decode(piece):
            seen, crc = seen + len(chunk), zlib.crc32(chunk, crc)
    return seen, crc


async def peer_read_all(total: int, path: str) -> tuple[int, int]:
    return crc_of_whole(b"".join(pieces(total)))


async def peer_file_read_all(total: int, path: str) -> tuple[int, int]:
    return crc_of_whole(Path(path).read_bytes())  # noqa: ASYNC240 - the peer blocks on purpose


def crc_of_whole(data: bytes) -> tuple[int, int]:
    view, crc = memoryview(data), 0
    for start in range(0, len(data), CHUNK):
        crc = zlib.crc32(view[start : start + CHUNK], crc)
    return len(data), crc


async def peer_file_blocking(total: int, path: str) -> tuple[int, int]:
    seen = crc = 0
    with open(path, "rb") as f:  # noqa: ASYNC230 - the peer blocks the loop on purpose
        while chunk := f.read(CHUNK):
            seen, crc = seen + len(chunk), zlib.crc32(chunk, crc)
    return seen, crc


def digest(chunk: bytes) -> bytes:
    return hashlib.sha256(chunk).digest()


async def od_map(total: int, path: str) -> tuple[int, int]:
    chunks = stream.chunks(pieces(total), CHUNK)
    results = stream.map(digest, chunks, concurrency=8, to_thread=True)
    return await digests_crc([d async for d in results])


async def peer_gather(total: int, path: str) -> tuple[int, int]:
    chunks = [c async for c in stream.chunks(pieces(total), CHUNK)]
    return await digests_crc(await asyncio.gather(*(asyncio.to_thread(digest, c) for c in chunks)))


async def peer_sequential(total: int, path: str) -> tuple[int, int]:
    return await digests_crc([digest(c) async for c in stream.chunks(pieces(total), CHUNK)])


async def digests_crc(digests: list[bytes]) -> tuple[int, int]:
    return len(digests) * CHUNK, zlib.crc32(b"".join(digests))


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str
    run: Callable[[int, str], Coroutine[Any, Any, tuple[int, int]]]
    ours: bool = False


SCENARIOS = [
    Scenario("overdrive chunks(sync generator)", "pieces", od_sync_gen, ours=True),
    Scenario("overdrive chunks(async generator)", "pieces", od_async_gen, ours=True),
    Scenario("peer: bytes += re-chunking", "pieces", peer_concat),
    Scenario("peer: httpx ByteChunker", "pieces", peer_httpx),
    Scenario("peer: join all, then slice", "pieces", peer_read_all),
    Scenario("overdrive chunks(path)", "file", od_file, ours=True),
    Scenario("overdrive chunks(path, prefetch=2)", "file", od_file_prefetch, ours=True),
    Scenario("peer: blocking f.read(1 MiB) loop", "file", peer_file_blocking),
    Scenario("peer: Path.read_bytes(), then slice", "file", peer_file_read_all),
    Scenario("overdrive map(sha256, 8 threads)", "map", od_map, ours=True),
    Scenario("peer: gather(to_thread) over all chunks", "map", peer_gather),
    Scenario("peer: sequential sha256 inline", "map", peer_sequential),
]


# ---------------------------------------------------------------- driver


def child(name: str, total: int, path: str, repeat: int) -> dict[str, float]:
    """Best time of ``repeat`` runs (the machine is shared), and the peak RSS growth of all."""
    scenario = next(s for s in SCENARIOS if s.name == name)
    times = []
    with PeakRSS() as memory:
        for _ in range(repeat):
            start = time.perf_counter()
            seen, check = asyncio.run(scenario.run(total, path))
            times.append(time.perf_counter() - start)
    return {"bytes": seen, "check": check, "seconds": min(times), "rss_growth": memory.growth}


def run_child(scenario: Scenario, total: int, path: str, repeat: int) -> dict[str, float]:
    argv = [sys.executable, __file__, "--child", scenario.name, f"--total={total}"]
    argv += ["--path", path, f"--repeat={repeat}"]
    out = subprocess.run(argv, capture_output=True, check=True, text=True)
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mb", type=int, default=1024, help="MiB through each scenario")
    parser.add_argument("--file-mb", type=int, default=1024, help="MiB of the temporary file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; best time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.total, args.path, args.repeat)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        file_mb = fit_file(tmp, args.file_mb)
        path = Path(tmp) / "data.bin"
        write_file(path, file_mb * MiB)
        report(args.total_mb, file_mb, str(path), args.repeat)


def fit_file(tmp: str, wanted_mb: int) -> int:
    """The file size to use: as asked, or what leaves half the free disk space."""
    free_mb = shutil.disk_usage(tmp).free // MiB
    if wanted_mb > free_mb // 2:
        print(f"only {free_mb} MiB free: the file is {free_mb // 2} MiB, not {wanted_mb}")
        return max(1, free_mb // 2)
    return wanted_mb


def report(total_mb: int, file_mb: int, path: str, repeat: int) -> None:
    print(f"chunks of 1 MiB; {total_mb} MiB from 64 KiB pieces, a {file_mb} MiB file;", end=" ")
    print(f"best of {repeat} runs, peak RSS growth over all")
    print(f"{'scenario':42} {'MiB/s':>8} {'RSS growth':>11} {'vs ours':>8}  check")
    ok, ours_speed = True, 0.0
    for scenario in SCENARIOS:
        total = (file_mb if scenario.group == "file" else total_mb) * MiB
        r = run_child(scenario, total, path, repeat)
        speed, growth = r["bytes"] / MiB / r["seconds"], r["rss_growth"] / MiB
        if scenario.ours:
            ok &= growth < TARGET_MIB
            mark, ours_speed = ("PASS" if growth < TARGET_MIB else "FAIL"), speed
        else:
            mark = f"{speed / ours_speed:.2f}x"
        print(f"{scenario.name:42} {speed:8.0f} {growth:8.1f} MiB {mark:>8}  {r['check']:08x}")
    print(f"target: overdrive RSS growth < {TARGET_MIB} MiB per GiB streamed: {ok}")
    print("'vs ours' is the peer's speed over the overdrive row above it")


if __name__ == "__main__":
    main()
