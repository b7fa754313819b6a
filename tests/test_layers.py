"""The package import graph, computed from the source: no cycles, no reaching into privates.

Every import counts: module level, inside functions (lazy) and under
``TYPE_CHECKING``, because each is a dependency a reader must follow. Nodes
are the subpackages (``overdrive.cache``) and the top-level modules
(``overdrive.engine``); the root package (``overdrive/__init__.py``, the
public face) is a node too, so nothing inside may import from it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import overdrive

ROOT = Path(overdrive.__file__).parent


def node_of(module: str) -> str:
    """The graph node a dotted module belongs to: its subpackage or top-level module."""
    parts = module.split(".")
    if len(parts) == 1:
        return "overdrive"
    return ".".join(parts[:2])


def module_of(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports_of(path: Path) -> Iterator[str]:
    """Every overdrive module or name ``path`` imports, as absolute dotted names."""
    module, is_package = module_of(path)
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("overdrive"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.startswith("overdrive"):
                yield from (f"{base}.{alias.name}" for alias in node.names)


def is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").exists() or (ROOT / relative).is_dir()


def target_of(dotted: str) -> str:
    """The module an imported name lives in (``overdrive.cache.TieredCache`` -> the package)."""
    return dotted if is_module(dotted) else dotted.rsplit(".", 1)[0]


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = node_of(module_of(path)[0])
        for imported in imports_of(path):
            target = node_of(target_of(imported))
            if target != source:
                edges.setdefault(source, set()).add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in sorted(edges.get(node, ())):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_engine_and_its_stages() -> None:
    edges = graph()
    # A broken walker finds nothing and passes everything: check it finds what is there.
    assert {"overdrive.cache", "overdrive.upstream", "overdrive.doors"} <= edges["overdrive.engine"]
    assert "overdrive.engine" in edges["overdrive"]


def test_no_package_import_cycle() -> None:
    assert cycles(graph()) == []


def test_a_cycle_is_reported() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_module_of_another_package_is_imported() -> None:
    reaching = []
    for path in ROOT.rglob("*.py"):
        source = node_of(module_of(path)[0])
        for imported in imports_of(path):
            target = target_of(imported)
            parts = target.split(".")
            private = any(part.startswith("_") for part in parts[2:])
            if private and node_of(target) != source:
                reaching.append(f"{module_of(path)[0]} -> {target}")
    assert reaching == []
