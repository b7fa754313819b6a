"""A real local Ray for tests, started once per test module.

Without Ray installed the tests skip, except under CI (``CI`` set), where a
missing install is a broken setup and fails loudly, as for ``redis-server``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["local_ray", "require_ray"]


def require_ray() -> Any:
    """The ``ray`` module; skips the test (fails it under CI) when Ray is not installed."""
    if importlib.util.find_spec("ray") is not None:
        return importlib.import_module("ray")
    message = "ray is not installed (pip install 'overdrive[ray]'; scripts/test installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: required under CI", pytrace=False)
    pytest.skip(message)


@contextmanager
def local_ray() -> Iterator[Any]:
    """A fresh local Ray on this machine's two cores: no dashboard, worker logs kept out."""
    ray = require_ray()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
