from __future__ import annotations

import pytest

from overdrive import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
