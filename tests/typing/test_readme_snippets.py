"""The README's snippets pass ``mypy --strict``: ``od.http_client()`` types as each SDK wants."""

from __future__ import annotations

from pathlib import Path

from mypy import api

SNIPPETS = Path(__file__).with_name("readme_snippets.py")
ROOT = Path(__file__).parents[2]


def test_the_readme_snippets_type_check_strictly() -> None:
    # The project's config (plugins, python version) with --strict on this one file.
    config = str(ROOT / "pyproject.toml")
    out, err, status = api.run(["--strict", "--config-file", config, str(SNIPPETS)])
    assert status == 0, out + err
    assert "Success" in out
