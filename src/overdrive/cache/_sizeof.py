"""Deep size of an object graph, so the memory tier can be bounded in real bytes.

``sys.getsizeof`` is shallow: a dict of long strings reports only its hash
table. :func:`deep_sizeof` walks containers and objects, counts every
object once (by id, so shared parts and cycles are neither double counted
nor followed forever) and stops descending past a depth bound.

>>> import sys
>>> payload = {"text": "x" * 1000, "scores": [0.5, 0.25]}
>>> deep_sizeof(payload) > sys.getsizeof(payload) + 1000
True
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["deep_sizeof"]

# Deeper than any sane JSON answer; past it we count the object shallowly
# rather than recurse without end through linked structures.
_MAX_DEPTH = 64

_getsizeof = sys.getsizeof

# Leaves: no references worth following. Counted by their own size.
_ATOMS: frozenset[type] = frozenset({str, bytes, int, float, complex, bytearray, range})

# Shared by the whole process, so a cached value does not own them: counting
# them would charge every entry for the same singleton, class or module.
_SHARED: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        type,
        types.ModuleType,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        type(Ellipsis),
        type(NotImplemented),
    }
)

_Push = Callable[[Any], None]


def deep_sizeof(obj: object, max_depth: int = _MAX_DEPTH) -> int:
    """Bytes held by ``obj`` and everything it references, each object once.

    >>> deep_sizeof([b"ab", b"ab"]) == deep_sizeof([b"ab"]) + 8  # one more list slot
    True
    """
    cls = type(obj)
    if cls in _ATOMS:  # the common single-string / bytes value: no walk at all
        return _getsizeof(obj)
    if cls is tuple and len(obj) <= _SHORT:  # type: ignore[arg-type]
        atoms = _atoms_size(obj)  # type: ignore[arg-type]
        if atoms is not None:  # a stored answer, (status, body, upstream, time): no walk
            return _getsizeof(obj) + atoms
    seen: set[int] = set()
    total = 0
    level: list[object] = [obj]
    for depth in range(max_depth + 1):
        follow = depth < max_depth
        deeper: list[object] = []
        for item in level:
            total += _visit(item, seen, deeper.append if follow else None)
        if not deeper:
            break
        level = deeper
    return total


def _atoms_size(items: tuple[object, ...]) -> int | None:
    """The summed sizes of a tuple of distinct atoms; None if it holds anything else.

    Passes in C (``map``), no Python loop: every cache write of an answer comes here.
    """
    if not _ATOMS.issuperset(map(type, items)):
        return None  # a container: the walk counts it
    if len(set(map(id, items))) != len(items):
        return None  # one object twice: the walk counts it once
    return sum(map(_getsizeof, items))


_SHORT = 8


def _visit(obj: object, seen: set[int], push: _Push | None) -> int:
    """Size of ``obj`` alone; its unseen children go to ``push`` (None: too deep)."""
    ident = id(obj)
    if ident in seen:
        return 0
    seen.add(ident)
    cls = type(obj)
    if cls in _ATOMS:
        return _getsizeof(obj)
    if cls in _SHARED:
        return 0
    size: int = _getsizeof(obj)
    if push is not None:
        size += _children(obj, cls, seen, push)
    return size


def _children(obj: Any, cls: type, seen: set[int], push: _Push) -> int:
    """Queue ``obj``'s references; returns the atoms among them, sized in place."""
    if cls is dict or isinstance(obj, Mapping):
        return _items(obj.keys(), seen, push) + _items(obj.values(), seen, push)
    if cls in (list, tuple, set, frozenset) or isinstance(obj, list | tuple | set | frozenset):
        return _items(obj, seen, push)
    return _attributes(obj, push)


def _items(items: Iterable[object], seen: set[int], push: _Push) -> int:
    """Size the atoms among ``items`` now (the bulk of JSON) and queue the rest."""
    size = 0
    for item in items:
        if type(item) in _ATOMS:
            ident = id(item)
            if ident not in seen:
                seen.add(ident)
                size += _getsizeof(item)
        else:
            push(item)
    return size


def _attributes(obj: object, push: _Push) -> int:
    """Queue an instance's ``__dict__`` and ``__slots__`` values."""
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        push(attrs)
    for klass in type(obj).__mro__:
        for name in _slot_names(klass):
            value = getattr(obj, name, None)
            if value is not None:
                push(value)
    return 0


def _slot_names(klass: type) -> tuple[str, ...]:
    slots = klass.__dict__.get("__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    return tuple(s for s in slots if s not in ("__dict__", "__weakref__"))
