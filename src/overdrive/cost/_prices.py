"""What a call costs: a price per model, applied to the usage its answer reports.

Prices are USD per million tokens: fresh prompt tokens at ``input``, prompt
tokens the provider read from its prompt cache at ``cached_input`` (the
provider's discount; ``input`` when it gives none), answer tokens at
``output``. The defaults (``prices.json``, with the date they were taken) are
the providers' list prices for well-known models; ``[[prices]]`` in the config
adds models or overrides them.

A model is priced by its own name, or else by the longest priced name it
extends with a dash: ``gpt-4o-2024-08-06`` as ``gpt-4o``, ``gpt-4o-mini`` as
itself. A model with no price costs nothing and is not counted.

>>> table = PriceTable({"m": Price(input=2.0, output=8.0, cached_input=0.5)})
>>> table.cost("m-2025", prompt=1_000_000, cached=500_000, completion=100_000)
2.05
>>> table.cost("other", 10, 0, 10) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from .._json import loads

__all__ = ["DEFAULT_PRICES_AS_OF", "Price", "PriceTable", "default_prices"]

_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices, USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, prompt: int, cached: int, completion: int) -> float:
        """The USD of an answer with this usage (``cached`` is a part of ``prompt``)."""
        cached = min(cached, prompt)
        reads = self.input if self.cached_input is None else self.cached_input
        dollars = (prompt - cached) * self.input + cached * reads + completion * self.output
        return dollars / _PER_MILLION


class PriceTable:
    """Prices by model name; a dated snapshot of a model is priced as the model."""

    __slots__ = ("_found", "_prices")

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._found: dict[str, Price | None] = {}  # by model asked: a lookup per call is one get

    def price(self, model: str) -> Price | None:
        """The price of ``model``: its own, or the longest priced name it extends; else None."""
        try:
            return self._found[model]
        except KeyError:
            pass
        found = self._prices.get(model)
        if found is None:
            stems = [name for name in self._prices if model.startswith(name + "-")]
            found = self._prices[max(stems, key=len)] if stems else None
        if len(self._found) < 4096:  # model names come from callers: bounded
            self._found[model] = found
        return found

    def cost(self, model: str, prompt: int, cached: int, completion: int) -> float | None:
        """The USD of an answer of ``model`` with this usage; None if ``model`` has no price."""
        price = self.price(model)
        return None if price is None else price.cost(prompt, cached, completion)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable(models={len(self._prices)})"


def _load_defaults() -> tuple[str, dict[str, Price]]:
    data: dict[str, Any] = loads(files(__package__).joinpath("prices.json").read_bytes())
    prices = {
        name: Price(float(p["input"]), float(p["output"]), _optional(p.get("cached_input")))
        for name, p in data["models"].items()
    }
    return str(data["as_of"]), prices


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


DEFAULT_PRICES_AS_OF, _DEFAULTS = _load_defaults()


def default_prices() -> dict[str, Price]:
    """The shipped list prices (as of :data:`DEFAULT_PRICES_AS_OF`), by model."""
    return dict(_DEFAULTS)
