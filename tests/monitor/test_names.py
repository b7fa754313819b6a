"""The metric catalogue: one constant and one help text per name, and no name spelt elsewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import overdrive
from overdrive import monitor
from overdrive.monitor import Metrics, names, prometheus_text
from overdrive.monitor.names import METRIC_HELP, REQUESTS, check_name

ROOT = Path(overdrive.__file__).parent
CATALOGUE = ROOT / "monitor" / "names.py"
# What a metric name ends in (Prometheus units and kinds): tells one from other
# "overdrive_..." strings such as a logging handler's or a context variable's name.
_METRIC_LIKE = re.compile(r"overdrive_[a-z0-9_]+_(total|seconds|bytes|size|value|ratio|info)")


def catalogued() -> dict[str, str]:
    """Each constant of the catalogue, by name: ``{"REQUESTS": "overdrive_requests_total"}``."""
    return {
        name: value
        for name, value in vars(names).items()
        if name.isupper() and isinstance(value, str) and value.startswith("overdrive_")
    }


def docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes of ``tree``: documentation may show a name as text."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def spelt_names(path: Path, known: set[str], root: Path = ROOT.parent) -> list[str]:
    """``file:line name`` for each metric name written as a string literal in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = docstrings(tree)
    found = sorted(
        (node.lineno, node.col_offset, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and (node.value in known or _METRIC_LIKE.fullmatch(node.value))
    )
    return [f"{path.relative_to(root)}:{line} {name}" for line, _, name in found]


def test_every_name_has_one_constant_and_a_help_text() -> None:
    constants = catalogued()
    assert len(set(constants.values())) == len(constants), "two constants for one name"
    assert set(constants.values()) == set(METRIC_HELP)
    assert all(text.endswith(".") for text in METRIC_HELP.values())


def test_every_name_follows_the_naming_rules() -> None:
    for name in METRIC_HELP:
        check_name(name, "counter" if name.endswith("_total") else "histogram")


def test_the_catalogue_is_public_as_monitor_names() -> None:
    assert monitor.names is names
    assert set(names.__all__) == {*catalogued(), "METRIC_HELP"}


def test_the_registry_describes_catalogued_names() -> None:
    metrics = Metrics()
    metrics.counter(REQUESTS, op="chat").inc()
    metrics.counter("jobs_total").inc()
    help_of = {family.name: family.help for family in metrics.collect()}
    assert help_of == {REQUESTS: METRIC_HELP[REQUESTS], "jobs_total": ""}
    assert f"# HELP {REQUESTS} {METRIC_HELP[REQUESTS]}" in prometheus_text(metrics)
    metrics.describe(REQUESTS, "Calls in.")  # a registry's own text still wins
    assert {family.name: family.help for family in metrics.collect()}[REQUESTS] == "Calls in."


def test_the_scan_finds_a_spelt_name(tmp_path: Path) -> None:
    # A broken scan finds nothing and passes everything: check it finds what is there.
    path = tmp_path / "sample.py"
    path.write_text(
        '"""Docs may say "overdrive_requests_total"."""\n'
        'HANDLER = "overdrive_access"\n'
        'NAME = "overdrive_requests_total"\n'
        'OTHER = "overdrive_made_up_seconds"\n'
    )
    assert spelt_names(path, set(METRIC_HELP), tmp_path) == [
        "sample.py:3 overdrive_requests_total",
        "sample.py:4 overdrive_made_up_seconds",
    ]


def test_no_metric_name_is_spelt_outside_the_catalogue() -> None:
    """Every metric name in code is a constant of ``monitor/names.py``, never a literal."""
    known = set(METRIC_HELP)
    paths = [path for path in sorted(ROOT.rglob("*.py")) if path != CATALOGUE]
    spelt = [found for path in paths for found in spelt_names(path, known)]
    assert spelt == [], "metric names spelt outside monitor/names.py:\n" + "\n".join(spelt)
