"""The public face: a few names at the top, sorted and complete faces below, one error tree.

The exception hierarchy is drawn once, in ``overdrive/_errors.py``'s docstring;
these tests read the drawing and hold it to the classes, both ways.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import re
import typing
from types import ModuleType

import pytest

import overdrive
from overdrive import _errors

MAX_TOP_LEVEL = 35
# A tree line: the drawing's prefix, then the class name, then what it means.
_TREE_LINE = re.compile(r"(?P<prefix>[│├└─ ]*)(?P<name>[A-Z]\w*)(?:\s|$)")
_PREFIX = re.compile(r"(?:│   |    )*[├└]── ")


def public_modules() -> list[str]:
    """``overdrive`` and each module right under it whose name has no leading underscore."""
    found = pkgutil.iter_modules(overdrive.__path__, "overdrive.")
    return ["overdrive", *sorted(m.name for m in found if not m.name.split(".")[1].startswith("_"))]


def subpackages() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(overdrive.__path__, "overdrive.") if m.ispkg)


def isort_order(name: str) -> tuple[int, str]:
    """ruff's order for ``__all__`` (RUF022): CONSTANTS, then Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def drawn_tree() -> dict[str, str | None]:
    """Each class drawn in ``_errors``'s docstring, with the class drawn as its parent."""
    after = (_errors.__doc__ or "").split("\n::\n", 1)[1].splitlines()
    lines = [line[4:] for line in itertools.takewhile(str.strip, after[1:])]
    assert lines, "no tree drawn after the ::"
    tree: dict[str, str | None] = {}
    path: list[str] = []
    for line in lines:
        match = _TREE_LINE.match(line)
        assert match, f"not a tree line: {line!r}"
        prefix, name = match["prefix"], match["name"]
        depth, rest = divmod(len(prefix), 4)
        assert rest == 0, f"misdrawn line: {line!r}"
        assert depth <= len(path), f"misdrawn line: {line!r}"
        assert depth == 0 or _PREFIX.fullmatch(prefix), f"misdrawn prefix: {line!r}"
        assert name not in tree, f"{name} drawn twice"
        del path[depth:]
        tree[name] = path[-1] if path else None
        path.append(name)
    return tree


def error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(_errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == _errors.__name__
    }


def real_tree() -> dict[str, str | None]:
    """Each class of ``_errors`` with its one base from ``_errors`` (None for the root)."""
    classes = error_classes()
    tree: dict[str, str | None] = {}
    for name, cls in classes.items():
        parents = [base.__name__ for base in cls.__bases__ if base in classes.values()]
        assert len(parents) <= 1, f"{name} has two overdrive bases: {parents}"
        tree[name] = parents[0] if parents else None
    return tree


def exported_errors(module: ModuleType) -> dict[str, type[BaseException]]:
    errors = {}
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            errors[name] = value
    return errors


def test_top_level_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(overdrive).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert overdrive.__all__ == sorted(overdrive.__all__, key=isort_order)
    assert public | {"__version__"} == set(overdrive.__all__)


def test_top_level_is_small() -> None:
    assert len(overdrive.__all__) <= MAX_TOP_LEVEL, sorted(overdrive.__all__)


def test_call_and_result_are_the_types_of_request() -> None:
    hints = typing.get_type_hints(overdrive.Overdrive.request)
    assert hints == {"call": overdrive.Call, "return": overdrive.Result}


def test_fake_clock_lives_in_testing() -> None:
    from overdrive import testing

    assert "FakeClock" not in overdrive.__all__
    assert testing.FakeClock().now() == 0.0


@pytest.mark.parametrize("name", public_modules())
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported: list[str] = module.__all__
    assert exported == sorted(exported, key=isort_order)
    assert len(set(exported)) == len(exported)
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it lacks"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)  # the face works as a star import too
    assert set(exported) <= set(namespace)


def test_the_public_modules_are_found() -> None:
    # A broken walk finds nothing and passes everything: check it sees what is there.
    assert {"overdrive.flow", "overdrive.testing", "overdrive.config"} <= set(public_modules())
    assert "overdrive.route" in subpackages()


def test_the_tree_is_read() -> None:
    tree = drawn_tree()
    assert tree["OverdriveError"] is None
    assert tree["AdmissionError"] == "OverdriveError"
    assert tree["PoolTimeoutError"] == "PoolError"
    assert tree["UpstreamUnavailableError"] == "UpstreamError"


def test_every_drawn_error_exists_with_its_drawn_parent() -> None:
    assert drawn_tree() == real_tree()


def test_errors_module_exports_every_error() -> None:
    assert sorted(_errors.__all__) == sorted(error_classes())


def test_errors_form_one_hierarchy() -> None:
    assert all(issubclass(e, overdrive.OverdriveError) for e in error_classes().values())


# The monitor's webhook sink exports an error of its own, outside the tree: it
# moves into _errors (as an OverdriveError) or leaves the face. strict: once it
# does, this test passes and the mark must go.


@pytest.mark.parametrize("name", public_modules())
def test_every_exported_error_is_drawn(name: str) -> None:
    drawn = drawn_tree()
    for error_name, cls in exported_errors(importlib.import_module(name)).items():
        assert error_name in drawn, f"{name}.{error_name} is not drawn in _errors"
        assert cls is getattr(_errors, error_name), f"{name}.{error_name} is another class"


def test_every_drawn_error_is_exported_somewhere() -> None:
    exported = set()
    for name in public_modules():
        exported |= set(exported_errors(importlib.import_module(name)))
    assert set(drawn_tree()) <= exported
