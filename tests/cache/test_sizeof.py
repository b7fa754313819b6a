from __future__ import annotations

import sys
from dataclasses import dataclass

from overdrive.cache._sizeof import deep_sizeof


def test_atoms_are_their_own_size() -> None:
    for value in ("text" * 10, b"bytes" * 10, 12345678901234567890, 1.5):
        assert deep_sizeof(value) == sys.getsizeof(value)


def test_nested_dict_is_larger_than_its_shallow_size() -> None:
    value = {"a": {"b": ["x" * 500, "y" * 500]}, "c": list(range(100))}
    assert deep_sizeof(value) > sys.getsizeof(value) + 1000


def test_shared_sub_objects_count_once() -> None:
    shared = ["z" * 1000]
    once = deep_sizeof([shared])
    twice = deep_sizeof([shared, shared])
    assert twice - once == sys.getsizeof([shared, shared]) - sys.getsizeof([shared])


def test_cycles_terminate() -> None:
    a: list[object] = ["payload" * 10]
    b: dict[str, object] = {"a": a}
    a.append(b)
    a.append(a)
    size = deep_sizeof(a)
    assert size == sys.getsizeof(a) + sys.getsizeof(b) + sys.getsizeof("payload" * 10) + (
        sys.getsizeof("a")
    )


def test_depth_bound_falls_back_to_shallow_size() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(10_000):  # deeper than Python's recursion limit
        child: list[object] = []
        node.append(child)
        node = child
    assert deep_sizeof(deep) > 0
    assert deep_sizeof(deep, max_depth=3) == 4 * sys.getsizeof(deep)  # same shape at each level


@dataclass
class _Plain:
    text: str
    numbers: list[int]


@dataclass(slots=True)
class _Slotted:
    text: str
    child: _Plain | None = None


def test_objects_with_dict_or_slots_are_walked() -> None:
    plain = _Plain("p" * 1000, list(range(10)))
    assert deep_sizeof(plain) > sys.getsizeof(plain) + 1000
    slotted = _Slotted("s" * 1000, plain)
    assert deep_sizeof(slotted) > deep_sizeof(plain) + 1000


def test_singletons_and_classes_are_not_charged() -> None:
    assert deep_sizeof([None, True, _Plain]) == sys.getsizeof([None, True, _Plain])


def test_tuple_set_and_frozenset_items_are_counted() -> None:
    for container in (tuple, set, frozenset):
        value = container(["q" * 300, "r" * 300])
        assert deep_sizeof(value) >= sys.getsizeof(value) + 600
