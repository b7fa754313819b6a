"""Debian's chromium under playwright, for the dashboard's browser tests and its screenshot.

Without ``chromium`` on PATH the tests skip, except under CI (``CI`` set),
where a missing browser is a broken setup and fails loudly (as with redis-server).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright

__all__ = ["CHROMIUM_ARGS", "chromium", "require_chromium"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> str:
    """The path of ``chromium``; skips the test (fails it under CI) when absent."""
    binary = shutil.which("chromium")
    if binary is not None:
        return binary
    message = (
        "chromium is not installed (Debian: apt-get install chromium; scripts/test installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}: required under CI", pytrace=False)
    pytest.skip(message)


@contextmanager
def chromium(executable: str) -> Iterator[Browser]:
    """A headless chromium, closed at the end."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
