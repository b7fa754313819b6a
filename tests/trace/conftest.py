"""What the trace tests share: a zero-latency sim and a fresh OTLP receiver per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overdrive.sim import SimConfig, SimServer
from tests.trace.receiver import Receiver


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(ttft_s=0.0, per_token_s=0.0, jitter=0.0)) as server:
        yield server


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver
