"""A full disk under the SQLite tier: callers never notice, /metrics and the log do."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from overdrive import Overdrive
from overdrive._asgi_server import free_port
from overdrive.cache import MemoryCache, TieredCache
from overdrive.cache._disk import DiskTier
from overdrive.cache._redis import RedisTier
from overdrive.monitor import Metrics, TierFaults
from overdrive.monitor._faults import LogThrottle
from overdrive.sim import SimConfig, SimServer
from overdrive.testing import FakeClock


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0)) as server:
        yield server


def _freeze_size(connection: sqlite3.Connection) -> None:
    # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full disk.
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")


async def test_a_full_disk_is_counted_and_logged_once(
    sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "upstreams": [{"name": "sim", "base_url": sim.base_url, "models": ["m"]}],
        "cache": {"disk": str(tmp_path / "cache.db")},
    }
    caplog.set_level(logging.WARNING, logger="overdrive.cache")
    async with Overdrive.from_config(config) as od:
        disk = od._cache.tiers[0]
        assert isinstance(disk, DiskTier)
        await disk._call(_freeze_size)
        for index in range(20):
            messages = [{"role": "user", "content": f"question {index} " + "x" * 4000}]
            reply = await od.chat(model="m", messages=messages, max_tokens=8)
            assert reply["choices"]  # the caller is served all the same
        await od._cache.flush()
        text = od.metrics_text()
    series = 'overdrive_cache_tier_errors_total{op="write",tier="disk"} '
    failed = [float(line.removeprefix(series)) for line in text.splitlines() if series in line]
    # The file's free pages take the first few; every write after them fails.
    assert failed
    assert 10 <= failed[0] <= 20
    lines = [r for r in caplog.records if r.name == "overdrive.cache"]
    assert len(lines) == 1
    assert "full" in lines[0].getMessage()


def test_the_log_speaks_again_after_the_interval_with_the_count() -> None:
    clock = FakeClock()
    faults = TierFaults(Metrics(clock=clock), clock, interval=60.0)
    throttle = LogThrottle(clock, 60.0)
    assert throttle.admit() == 0
    assert throttle.admit() is None
    assert throttle.admit() is None
    clock.advance(60.0)
    assert throttle.admit() == 2
    faults.report("redis", "write", OSError("down"))
    counter = faults.metrics.counter("overdrive_cache_tier_errors_total", tier="redis", op="write")
    assert counter.value == 1.0


async def test_redis_going_away_is_reported_per_operation() -> None:
    reports: list[tuple[str, str]] = []
    # Nobody listens there: the real client's connection is refused.
    tier = RedisTier(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    cache = TieredCache(MemoryCache(1 << 20), [tier])
    cache.on_fault = lambda name, op, error: reports.append((name, op))
    await cache.set(b"k", {"v": 1}, ttl=60, wait=True)
    cache.memory.delete(b"k")
    assert await cache.get(b"k") is None  # fails open: a miss, not an error
    await cache.aclose()
    assert reports[:2] == [("redis", "write"), ("redis", "read")]
