"""Run a snippet in a fresh interpreter: what it imports there is what a user's program would."""

from __future__ import annotations

import subprocess
import sys
import textwrap

__all__ = ["run_python"]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
