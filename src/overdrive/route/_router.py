"""Which upstream serves a call: the deployments of its model, taken in turn."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from .._errors import UnknownModelError

__all__ = ["Router"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Sequence[str]: ...


U = TypeVar("U", bound=_Named)


class Router(Generic[U]):
    """Round robin over the upstreams that serve a model, avoiding one that just failed."""

    __slots__ = ("_by_model", "_turns")

    def __init__(self, upstreams: Sequence[U]) -> None:
        self._by_model: dict[str, list[U]] = {}
        for upstream in upstreams:
            for model in upstream.models:
                self._by_model.setdefault(model, []).append(upstream)
        self._turns: dict[str, Iterator[U]] = {
            model: itertools.cycle(group) for model, group in self._by_model.items()
        }

    def pick(self, model: str, avoid: U | None = None) -> U:
        turns = self._turns.get(model)
        if turns is None:
            raise UnknownModelError(model, self.models())
        choice = next(turns)
        if choice is avoid and len(self._by_model[model]) > 1:
            choice = next(turns)
        return choice

    def serves(self, model: str) -> bool:
        return model in self._by_model

    def models(self) -> list[str]:
        return list(self._by_model)

    def __repr__(self) -> str:
        sizes = {m: len(g) for m, g in self._by_model.items()}
        return f"Router(deployments_per_model={sizes})"
