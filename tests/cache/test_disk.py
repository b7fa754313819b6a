from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overdrive import CacheError
from overdrive.cache._disk import DiskTier
from overdrive.cache._tier import Entry

from .conftest import FakeWall

REPO = Path(__file__).resolve().parents[2]


def entry(wall: FakeWall, value: bytes = b"v", tags: tuple[str, ...] = ()) -> Entry:
    return Entry(value, expires_at=wall() + 10, stale_until=wall() + 20, tags=tags)


@pytest.fixture
async def tier(tmp_path: Path, wall: FakeWall) -> AsyncIterator[DiskTier]:
    tier = DiskTier(tmp_path / "cache.db", wall=wall)
    yield tier
    await tier.aclose()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _moved_aside(path: Path) -> list[Path]:
    """The damaged database files moved aside (not their -wal/-shm companions)."""
    found = path.parent.glob(f"{path.name}.corrupt-*")
    return [p for p in found if not p.name.endswith(("-wal", "-shm"))]


async def test_set_get_delete(tier: DiskTier, wall: FakeWall) -> None:
    stored = entry(wall, b"hello", tags=("a", "b"))
    await tier.set(b"k", stored)
    assert await tier.get(b"k") == stored
    assert await tier.get(b"missing") is None
    assert await tier.delete(b"k")
    assert not await tier.delete(b"k")
    assert await tier.get(b"k") is None
    assert _rows(tier.path, "SELECT count(*) FROM tags") == [(0,)]


async def test_stale_entry_served_until_stale_until(tier: DiskTier, wall: FakeWall) -> None:
    await tier.set(b"k", entry(wall))
    wall.advance(15)  # past expires_at, inside the serve-stale window
    got = await tier.get(b"k")
    assert got is not None
    assert not got.fresh(wall())
    wall.advance(5)
    assert await tier.get(b"k") is None


async def test_overwrite_replaces_value_and_tags(tier: DiskTier, wall: FakeWall) -> None:
    await tier.set(b"k", entry(wall, b"one", tags=("old",)))
    await tier.set(b"k", entry(wall, b"two", tags=("new", "new")))
    got = await tier.get(b"k")
    assert got is not None
    assert (got.value, got.tags) == (b"two", ("new",))
    assert await tier.delete_tags(["old"]) == 0


async def test_delete_tags_removes_every_tagged_entry(tier: DiskTier, wall: FakeWall) -> None:
    await tier.set(b"a", entry(wall, tags=("user:1", "doc:9")))
    await tier.set(b"b", entry(wall, tags=("user:1",)))
    await tier.set(b"c", entry(wall, tags=("user:2",)))
    assert await tier.delete_tags(["user:1", "doc:9"]) == 2
    assert await tier.get(b"a") is None
    assert await tier.get(b"b") is None
    assert await tier.get(b"c") is not None
    assert _rows(tier.path, "SELECT tag FROM tags") == [("user:2",)]


async def test_namespaces_share_a_file_but_never_entries(tmp_path: Path, wall: FakeWall) -> None:
    one = DiskTier(tmp_path / "c.db", namespace="one", wall=wall)
    two = DiskTier(tmp_path / "c.db", namespace="two", wall=wall)
    try:
        await one.set(b"k", entry(wall, b"1", tags=("t",)))
        await two.set(b"k", entry(wall, b"2", tags=("t",)))
        assert (await one.get(b"k"), await two.get(b"k")) != (None, None)
        assert await two.delete_tags(["t"]) == 1
        await two.set(b"k", entry(wall, b"2"))
        await one.clear()
        assert await one.get(b"k") is None
        got = await two.get(b"k")
        assert got is not None
        assert got.value == b"2"
    finally:
        await one.aclose()
        await two.aclose()


async def test_survives_restart_and_holds_large_values(tmp_path: Path, wall: FakeWall) -> None:
    big = os.urandom(4 * 1024 * 1024)
    first = DiskTier(tmp_path / "c.db", wall=wall)
    await first.set(b"big", entry(wall, big, tags=("t",)))
    await first.aclose()
    second = DiskTier(tmp_path / "c.db", wall=wall)
    try:
        got = await second.get(b"big")
        assert got is not None
        assert got.value == big
        assert got.tags == ("t",)
    finally:
        await second.aclose()


async def test_expired_entries_are_pruned_in_bounded_steps(tier: DiskTier, wall: FakeWall) -> None:
    for i in range(3):
        await tier.set(b"old%d" % i, entry(wall, tags=("t",)))
    wall.advance(30)
    for i in range(16):  # pruning rides along with every 16th write
        await tier.set(b"new%d" % i, entry(wall))
    assert tier.pruned == 3
    assert _rows(tier.path, "SELECT count(*) FROM entries") == [(16,)]
    assert _rows(tier.path, "SELECT count(*) FROM tags") == [(0,)]


async def test_garbage_file_is_moved_aside_and_rebuilt(tmp_path: Path, wall: FakeWall) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"this is not a database" * 300)
    tier = DiskTier(path, wall=wall)
    try:
        assert await tier.get(b"k") is None
        await tier.set(b"k", entry(wall))
        assert await tier.get(b"k") is not None
        assert tier.rebuilds == 1
        aside = _moved_aside(path)
        assert [p.read_bytes()[:22] for p in aside] == [b"this is not a database"]
    finally:
        await tier.aclose()


async def test_corruption_after_open_rebuilds_and_keeps_working(
    tier: DiskTier, wall: FakeWall
) -> None:
    for i in range(20):
        await tier.set(b"k%d" % i, entry(wall, os.urandom(4000)))
    # Another connection checkpoints (so our page cache is invalidated) and then
    # the pages are overwritten, as a failing disk or a stray writer would.
    _rows(tier.path, "PRAGMA wal_checkpoint(TRUNCATE)")
    size = tier.path.stat().st_size
    with tier.path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * (size - 4096))
    assert await tier.get(b"k3") is None
    await tier.set(b"after", entry(wall))
    assert await tier.get(b"after") is not None
    assert tier.rebuilds == 1
    assert len(_moved_aside(tier.path)) == 1
    assert "rebuilds=1" in repr(tier)


async def test_backend_failure_becomes_cache_error(tmp_path: Path, wall: FakeWall) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    tier = DiskTier(blocker / "c.db", wall=wall)  # parent is a file: cannot open
    try:
        with pytest.raises(CacheError, match="disk"):
            await tier.get(b"k")
    finally:
        await tier.aclose()
    with pytest.raises(CacheError, match="closed"):
        await tier.get(b"k")


_WRITER = """
import asyncio, sys, time
from overdrive.cache._disk import DiskTier
from overdrive.cache._tier import Entry

async def main(path, who):
    tier = DiskTier(path)
    now = time.time()
    for i in range(40):
        await tier.set(b"%s-%d" % (who.encode(), i), Entry(b"x" * 1000, now + 60, now + 60, (who,)))
    await tier.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_several_processes_write_one_file(tier: DiskTier) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, str(tier.path), f"p{n}", cwd=REPO
        )
        for n in range(3)
    ]
    assert [await proc.wait() for proc in procs] == [0, 0, 0]
    for n in range(3):
        assert await tier.get(b"p%d-39" % n) is not None
    assert await tier.delete_tags(["p0", "p1", "p2"]) == 120
