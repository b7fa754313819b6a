"""Label sets and the arithmetic between them: how a rule is judged per label set.

An expression evaluates to a *scalar* (a number, or None for no data) or a
*vector*: one value per label set, a label set being the sorted ``(name,
value)`` pairs of a series (after ``by``). Arithmetic follows Prometheus:

* scalar ``op`` scalar is a scalar;
* vector ``op`` scalar (either side) applies the scalar to every element;
* vector ``op`` vector matches elements on the label names both sides carry
  (a name missing from a series counts as the empty value): each left element
  pairs with every right element that agrees with it on those names, and the
  result carries the labels of both. Elements without a partner drop out
  (no data); two pairs that would give one label set are ambiguous and drop
  out too. With no shared names every element pairs with every other, which
  is what a vector and a single unlabelled series want.

>>> chat, embed = (("op", "chat"),), (("op", "embeddings"),)
>>> combine("/", {chat: 3.0, embed: 1.0}, {chat: 6.0})
{(('op', 'chat'),): 0.5}
>>> combine("*", {chat: 3.0}, 2.0)
{(('op', 'chat'),): 6.0}
>>> render((("model", "gpt-4o"), ("upstream", "a")))
'{model="gpt-4o", upstream="a"}'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias

__all__ = ["Labels", "Sample", "Vector", "as_vector", "combine", "render"]

Labels: TypeAlias = tuple[tuple[str, str], ...]  # sorted by name
Vector: TypeAlias = dict[Labels, float]
Sample: TypeAlias = float | Vector | None  # what an expression evaluates to
DEFAULT_LIMIT = 1000  # label sets one operation may produce, so a cross product stays bounded


def as_vector(found: float | Mapping[Labels, float] | None) -> Vector:
    """A source's answer as a vector: a plain number stands for one unlabelled series."""
    if found is None:
        return {}
    if isinstance(found, int | float):
        return {(): float(found)}
    return dict(found)


def combine(op: str, left: Sample, right: Sample, limit: int = DEFAULT_LIMIT) -> Sample:
    """``left op right`` with the matching rules above; at most ``limit`` label sets."""
    if isinstance(left, dict) and isinstance(right, dict):
        return _join(op, left, right, limit)
    if isinstance(left, dict):
        return _each(left, lambda value: arithmetic(op, value, _scalar(right)))
    if isinstance(right, dict):
        return _each(right, lambda value: arithmetic(op, _scalar(left), value))
    return arithmetic(op, left, right)


def arithmetic(op: str, left: float | None, right: float | None) -> float | None:
    """One operation on two numbers; None (no data) in, or a division by zero, is None."""
    if left is None or right is None:
        return None
    if op == "/":
        return None if right == 0 else left / right
    return left + right if op == "+" else left - right if op == "-" else left * right


def render(labels: Labels) -> str:
    """``{a="1", b="2"}`` as alerts name a label set; ``""`` for the empty one."""
    if not labels:
        return ""
    return "{" + ", ".join(f'{name}="{value}"' for name, value in labels) + "}"


def _scalar(sample: Sample) -> float | None:
    assert not isinstance(sample, dict)  # combine() only calls this on the scalar side
    return sample


def _each(vector: Vector, apply: Callable[[float], float | None]) -> Vector:
    found = ((labels, apply(value)) for labels, value in vector.items())
    return {labels: value for labels, value in found if value is not None}


def _join(op: str, left: Vector, right: Vector, limit: int) -> Vector:
    shared = sorted(_names(left) & _names(right))
    partners: dict[Labels, list[Labels]] = {}
    for labels in right:
        partners.setdefault(_project(labels, shared), []).append(labels)
    joined: Vector = {}
    ambiguous: set[Labels] = set()
    for labels, value in left.items():
        for other in partners.get(_project(labels, shared), ()):
            result = arithmetic(op, value, right[other])
            if result is None:
                continue
            key = _union(labels, other)
            if key in joined:
                ambiguous.add(key)
            elif len(joined) >= limit:  # a cross product of two hostile vectors stops here
                return _without(joined, ambiguous)
            joined[key] = result
    return _without(joined, ambiguous)


def _names(vector: Vector) -> set[str]:
    return {name for labels in vector for name, _ in labels}


def _project(labels: Labels, names: Iterable[str]) -> Labels:
    found = dict(labels)
    return tuple((name, found.get(name, "")) for name in names)


def _union(left: Labels, right: Labels) -> Labels:
    return tuple(sorted({**dict(right), **dict(left)}.items()))


def _without(vector: Vector, ambiguous: set[Labels]) -> Vector:
    for labels in ambiguous:
        del vector[labels]
    return vector
