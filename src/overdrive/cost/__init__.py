"""Cost: the price of each model, and what each answer cost by its usage."""

from __future__ import annotations

from ._prices import DEFAULT_PRICES_AS_OF, Price, PriceTable, cost_by_model, default_prices

__all__ = ["DEFAULT_PRICES_AS_OF", "Price", "PriceTable", "cost_by_model", "default_prices"]
