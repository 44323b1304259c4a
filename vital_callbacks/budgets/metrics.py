"""Prometheus gauges for budgets, when prometheus-client is installed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from vital_callbacks.budgets.model import Budget


class BudgetMetrics:
    """Prometheus gauges for budgets, when prometheus-client is installed."""

    def __init__(self, spend: Any, limit: Any, exceeded: Any, counter_errors: Any = None) -> None:
        self._spend, self._limit, self._exceeded = spend, limit, exceeded
        self._counter_errors = counter_errors

    @classmethod
    def create(cls, registry: Any = None) -> BudgetMetrics:
        try:
            from prometheus_client import REGISTRY, Counter, Gauge
        except ImportError:
            return cls(None, None, None)
        registry = registry or REGISTRY
        existing = getattr(registry, "_names_to_collectors", {})
        if "vital_budget_spend_usd" in existing:
            return cls(existing["vital_budget_spend_usd"], existing["vital_budget_limit_usd"],
                       existing["vital_budget_exceeded_total"], existing.get("vital_budget_counter_errors_total"))
        labels = ["budget", "scope", "period"]
        return cls(
            Gauge("vital_budget_spend_usd", "Spend in the budget's current period (USD).", labels, registry=registry),
            Gauge("vital_budget_limit_usd", "The budget's limit (USD).", labels, registry=registry),
            Counter("vital_budget_exceeded", "LLM calls stopped by a budget.", labels, registry=registry),
            Counter("vital_budget_counter_errors", "Budget reservations the shared counter (store or Redis) could "
                    "not answer.", registry=registry),
        )

    @staticmethod
    def _labels(budget: Budget, key: str) -> tuple[str, str, str]:
        scope = budget.scope if budget.scope == "global" else f"{budget.scope}:{key}"
        return budget.label, scope, budget.period

    def spend(self, budget: Budget, key: str, value: Decimal) -> None:
        if self._spend is not None:
            labels = self._labels(budget, key)
            self._spend.labels(*labels).set(float(value))
            self._limit.labels(*labels).set(float(budget.amount_usd))

    def counter_error(self) -> None:
        if self._counter_errors is not None:
            self._counter_errors.inc()

    def exceeded(self, budget: Budget, key: str) -> None:
        if self._exceeded is not None:
            self._exceeded.labels(*self._labels(budget, key)).inc()
