"""Step 3: the cost of an LLM call from the price book, and step 4: its spend against the budgets.

A response-cache hit costs nothing; what it would have cost is kept as ``saved_cost``. A call
already priced on the caller's thread (a stop budget needs its spend at once) is left as it is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from vital_callbacks.budgets import BudgetGuard
from vital_callbacks.core.events import BILLED_PARTS, PRICED, Cost, Event, LLMCall
from vital_callbacks.pricing.book import PriceBook

_ZERO = Decimal(0)


class Price:
    kinds = (LLMCall,)

    def __init__(self, prices: PriceBook) -> None:
        self.prices = prices

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        parts = f.pop(BILLED_PARTS, ())
        if f.pop(PRICED, False) or f.get("cost") is not None or f.get("token_source") == "none":
            return  # priced on the caller's thread (a stop budget), or nothing to price
        price = self.prices.price(f.get("provider"), f.get("model"), f["usage"], f.get("start_time", 0.0),
                                  service_tier=f.get("service_tier"), parts=parts)
        if f.get("cache_hit"):
            f["cost"], f["saved_cost"] = Cost(_ZERO, _ZERO, _ZERO, "cache"), (price.total if price else None)
        else:
            f["cost"] = price
        f["_priced_here"] = f["cost"] is not None


class RecordSpend:
    kinds = (LLMCall,)

    def __init__(self, budgets: BudgetGuard) -> None:
        self.budgets = budgets

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        cost = f.get("cost")
        if f.pop("_priced_here", False) and cost is not None:
            self.budgets.record(f.get("tenant_id"), f.get("user_id"), f.get("graph"), cost.total, f["run_id"])
