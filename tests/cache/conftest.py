from __future__ import annotations

import time

import pytest


class FakeWall:
    """A settable epoch clock, starting at the real time so Redis TTLs (on its own clock) agree."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __repr__(self) -> str:
        return f"FakeWall({self.now})"


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall(time.time())
