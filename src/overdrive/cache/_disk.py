"""L2 on local disk: one SQLite file shared by every process on the machine.

Each process (and each :class:`DiskTier`) opens its own connection and uses it
from one dedicated worker thread, so sqlite3 never blocks the event loop and
never sees a connection cross threads. The file runs in WAL mode (readers do
not block the writer) with ``synchronous=NORMAL`` (durable across process
crashes; a power cut may lose the last writes, which a cache can afford), and
every write is one short ``BEGIN IMMEDIATE`` transaction.

A cache must never take the application down with it: if the file is not a
database, fails ``PRAGMA quick_check`` at open, or reports corruption later,
it is moved aside as ``<path>.corrupt-<ms timestamp>`` and an empty database
takes its place (counted in ``rebuilds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .. import _json
from .._errors import CacheError
from ._tier import Entry, Tier

__all__ = ["DiskTier"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL NOT NULL,
    stale_until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_stale_until ON entries (stale_until);
CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, key BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS tags_tag_key ON tags (tag, key);
CREATE INDEX IF NOT EXISTS tags_key ON tags (key);
"""

# One query, so value, times and tags come from the same snapshot.
_GET = """
SELECT value, expires_at, stale_until,
       (SELECT json_group_array(tag) FROM (SELECT tag FROM tags WHERE key = e.key ORDER BY rowid))
FROM entries AS e WHERE key = ? AND stale_until > ?
"""

_PRUNE = """
DELETE FROM entries WHERE key IN (SELECT key FROM entries WHERE stale_until <= ? LIMIT ?)
RETURNING key
"""

# Pruning runs inside every Nth set and removes at most a batch, so a write
# never pays for a backlog of expired rows all at once.
_PRUNE_EVERY = 16
_PRUNE_BATCH = 128

_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class _QuickCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage: handled like SQLite's own corruption errors."""


def _is_corruption(exc: sqlite3.Error) -> bool:
    if isinstance(exc, _QuickCheckFailed):
        return True
    # Extended result codes (SQLITE_CORRUPT_INDEX, ...) keep the primary code in the low byte.
    return (getattr(exc, "sqlite_errorcode", -1) & 0xFF) in _CORRUPTION_CODES


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads
    # and then writes can fail with SQLITE_BUSY without waiting at all.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class DiskTier(Tier):
    """A shared cache tier in a SQLite file; entries survive restarts.

    ``namespace`` is part of every stored key, so tenants sharing one file
    never see (or clear) each other's entries.

    >>> import asyncio, tempfile, time
    >>> async def demo(path):
    ...     tier = DiskTier(path, namespace="tenant-a")
    ...     now = time.time()
    ...     await tier.set(b"k", Entry(b"v", expires_at=now + 60, stale_until=now + 120))
    ...     entry = await tier.get(b"k")
    ...     await tier.aclose()
    ...     return entry.value
    >>> asyncio.run(demo(tempfile.mkdtemp() + "/cache.db"))
    b'v'
    """

    __slots__ = (
        "_busy_timeout",
        "_conn",
        "_executor",
        "_inode",
        "_key_hi",
        "_key_prefix",
        "_sets",
        "_wall",
        "closed",
        "namespace",
        "path",
        "pruned",
        "rebuilds",
    )

    name = "disk"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "",
        wall: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
    ) -> None:
        if "\x00" in namespace:
            raise ValueError("namespace must not contain NUL")
        self.path = Path(path)
        self.namespace = namespace
        self.rebuilds = 0
        self.pruned = 0
        self.closed = False
        self._wall = wall
        self._busy_timeout = busy_timeout
        # NUL ends the namespace, so ns + NUL .. ns + 0x01 is exactly this tenant's key range.
        self._key_prefix = namespace.encode() + b"\x00"
        self._key_hi = namespace.encode() + b"\x01"
        self._sets = 0
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="overdrive-disk")

    async def get(self, key: bytes) -> Entry | None:
        return await self._call(self._get, self._key_prefix + key, self._wall())

    async def set(self, key: bytes, entry: Entry) -> None:
        await self._call(self._set, self._key_prefix + key, entry, self._wall())

    async def delete(self, key: bytes) -> bool:
        return await self._call(self._delete, self._key_prefix + key)

    async def delete_tags(self, tags: Iterable[str]) -> int:
        return await self._call(self._delete_tags, tuple(tags))

    async def clear(self) -> None:
        await self._call(self._clear)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)  # the worker is idle now: this only joins it

    # -- running on the worker thread ---------------------------------------------

    async def _call(self, op: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise CacheError(self.name, "tier is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, op, args)

    def _guarded(self, op: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            try:
                return op(self._connection(), *args)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._rebuild()
                return op(self._connection(), *args)
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(self.name, f"{type(exc).__name__}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, keeping transactions short.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            self._inode = self.path.stat().st_ino
            self._check(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _check(conn: sqlite3.Connection) -> None:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise _QuickCheckFailed(f"quick_check: {rows[:3]}")

    def _rebuild(self) -> None:
        """Move the damaged file aside (unless another process already did) and start empty."""
        self._close()
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self._move_aside()
                self.rebuilds += 1

    def _move_aside(self) -> None:
        stamp = int(self._wall() * 1000)
        suffix = f".corrupt-{stamp}"
        n = 0
        while Path(f"{self.path}{suffix}").exists():
            n += 1
            suffix = f".corrupt-{stamp}-{n}"
        # The WAL and shared-memory files belong to the damaged database; a new
        # file must not inherit them.
        for extra in ("-wal", "-shm", ""):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{extra}", f"{self.path}{suffix}{extra}")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- the operations (worker thread, given a live connection) ------------------

    def _get(self, conn: sqlite3.Connection, key: bytes, now: float) -> Entry | None:
        row = conn.execute(_GET, (key, now)).fetchone()
        if row is None:
            return None
        value, expires_at, stale_until, tags = row
        return Entry(value, expires_at, stale_until, tuple(_json.loads(tags)))

    def _set(self, conn: sqlite3.Connection, key: bytes, entry: Entry, now: float) -> None:
        tags = [(tag, key) for tag in dict.fromkeys(entry.tags)]
        with _write(conn):
            conn.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                (key, entry.value, entry.expires_at, entry.stale_until),
            )
            conn.execute("DELETE FROM tags WHERE key = ?", (key,))
            conn.executemany("INSERT INTO tags (tag, key) VALUES (?, ?)", tags)
            if self._sets % _PRUNE_EVERY == 0:
                self._prune(conn, now)
        self._sets += 1

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        gone = conn.execute(_PRUNE, (now, _PRUNE_BATCH)).fetchall()
        conn.executemany("DELETE FROM tags WHERE key = ?", gone)
        self.pruned += len(gone)

    def _delete(self, conn: sqlite3.Connection, key: bytes) -> bool:
        with _write(conn):
            conn.execute("DELETE FROM tags WHERE key = ?", (key,))
            return conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0

    def _delete_tags(self, conn: sqlite3.Connection, tags: tuple[str, ...]) -> int:
        removed = 0
        with _write(conn):
            for key in self._tagged_keys(conn, tags):
                conn.execute("DELETE FROM tags WHERE key = ?", (key,))
                removed += conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount
        return removed

    def _tagged_keys(self, conn: sqlite3.Connection, tags: tuple[str, ...]) -> dict[bytes, None]:
        """This namespace's keys carrying any of ``tags``, each once."""
        sql = "SELECT key FROM tags WHERE tag = ? AND key >= ? AND key < ?"
        keys: dict[bytes, None] = {}
        for tag in dict.fromkeys(tags):
            rows = conn.execute(sql, (tag, self._key_prefix, self._key_hi))
            keys.update((key, None) for (key,) in rows)
        return keys

    def _clear(self, conn: sqlite3.Connection) -> None:
        bounds = (self._key_prefix, self._key_hi)
        with _write(conn):
            conn.execute("DELETE FROM tags WHERE key >= ? AND key < ?", bounds)
            conn.execute("DELETE FROM entries WHERE key >= ? AND key < ?", bounds)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self._conn is not None else "lazy"
        return (
            f"DiskTier(path={str(self.path)!r}, namespace={self.namespace!r}, {state}, "
            f"rebuilds={self.rebuilds}, pruned={self.pruned})"
        )
