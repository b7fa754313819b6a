"""The docs name the tree as it is: README's layout and docs/architecture.md's modules exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "overdrive"
# A path the docs name inside the package: `cache/_stage.py`, `monitor/names.py`, `engine.py`.
_MODULE_PATH = re.compile(r"`((?:[a-z_]+/)*[a-z_]+\.py)`")


def layout_block() -> str:
    """The code block under README's "## Layout" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```\n", 2)[1]


def packages() -> set[str]:
    return {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def test_readme_layout_names_every_package_and_only_real_ones() -> None:
    block = layout_block()
    named = set(re.findall(r"^\s+([a-z_]+)/ ", block, re.MULTILINE))
    named |= set(re.findall(r"\s{2,}([a-z_]+)/ ", block))
    assert named == packages()
    for module in re.findall(r"\b(_?[a-z_]+\.py)\b", block):
        assert (PACKAGE / module).exists() or list(PACKAGE.rglob(module)), module


def test_architecture_names_only_modules_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = _MODULE_PATH.findall(text)
    assert len(named) > 30  # the stage table, the doors, the adapters
    missing = [path for path in named if not _exists(path)]
    assert missing == []


def test_architecture_covers_every_package_and_adapter() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert all(f"{name}/" in text for name in packages() - {"demo", "sim", "stream"}), packages()
    adapters = {p.name for p in (PACKAGE / "apis").glob("[a-z]*.py")}
    assert all(f"apis/{name}" in text for name in adapters), adapters


def _exists(path: str) -> bool:
    """A path under the package or the repo; a bare name (after its package's first) anywhere."""
    if "/" not in path:
        return any(PACKAGE.rglob(path))
    return (PACKAGE / path).exists() or (ROOT / path).exists()
