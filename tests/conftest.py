from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from overdrive.testing import FakeClock
from tests.redis_server import RedisServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for one test (fails under CI when redis-server is missing)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
