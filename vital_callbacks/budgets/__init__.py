"""Spend limits per tenant, user, graph or globally: warn, alert, or stop a call before it spends."""

from vital_callbacks.budgets.guard import BudgetGuard
from vital_callbacks.budgets.model import (
    Budget,
    BudgetExceeded,
    BudgetFileError,
    BudgetStatus,
    load_budgets,
    retry_unless_budget,
)

__all__ = ["Budget", "BudgetExceeded", "BudgetFileError", "BudgetGuard", "BudgetStatus", "load_budgets",
           "retry_unless_budget"]
