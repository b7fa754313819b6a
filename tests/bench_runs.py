"""Running a benchmark script in its quick mode, for the tests that read its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def quick_run(script: str, figures: Path, timeout: float = 120) -> tuple[str, dict[str, Any]]:
    """The printed output and the ``--json`` figures of ``script --quick``; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(figures.read_text())
