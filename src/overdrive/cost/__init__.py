"""Cost: the price of each model, what each answer cost by its usage, and budgets."""

from __future__ import annotations

from .._errors import BudgetExceededError
from ._budget import Budget, Budgets, budgets_for
from ._prices import DEFAULT_PRICES_AS_OF, Price, PriceTable, default_prices
from ._tally import LocalTally, RedisTally, Tally

__all__ = [
    "DEFAULT_PRICES_AS_OF",
    "Budget",
    "BudgetExceededError",
    "Budgets",
    "LocalTally",
    "Price",
    "PriceTable",
    "RedisTally",
    "Tally",
    "budgets_for",
    "default_prices",
]
