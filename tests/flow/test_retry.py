from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overdrive.flow import Backoff, retry_after


@given(attempt=st.integers(0, 100), seed=st.integers(0, 2**32))
def test_full_jitter_stays_within_the_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff(base=0.2, cap=8.0, rng=random.Random(seed))
    assert 0.0 <= backoff.delay(attempt) <= min(8.0, 0.2 * 2**attempt)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "350"}, 0.35),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "600"}, None),  # longer than we would ever wait
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_http_date() -> None:
    moment = datetime.now(UTC) + timedelta(seconds=30)
    waited = retry_after({"retry-after": format_datetime(moment, usegmt=True)})
    assert waited is not None
    assert 25 < waited <= 30
