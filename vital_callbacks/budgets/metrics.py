"""Prometheus metrics of budgets, read from the guards at scrape time, when prometheus-client is installed.

Spend and limit are gauges a collector computes at scrape from each live guard's view of its budgets,
so a ``match: "*"`` budget over users cannot make one series per user: past ``max_keys`` keys per
budget (``VITAL_PROMETHEUS_MAX_TENANTS``, the sink's own cardinality guard), the biggest spenders keep
their series and the rest are summed under ``<scope>:other``. The refusal counter is bounded the same way.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from vital_callbacks.budgets.model import Budget

OTHER = "other"
LABELS = ["budget", "scope", "period"]

SpendView = Callable[[], Iterable[tuple[Budget, list[tuple[str, Decimal]]]]]
"""What a guard shows: each budget with its keys' spend."""

_lock = threading.Lock()
_collectors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""One collector per registry, shared by every guard of the process."""


def _scope(budget: Budget, key: str) -> str:
    return budget.scope if budget.scope == "global" else f"{budget.scope}:{key}"


class BudgetMetrics:
    """A guard's handle on the budget metrics: registers the guard's view with the collector, counts
    refusals and counter errors (no-ops without prometheus-client)."""

    def __init__(self, collector: Any = None, max_keys: int = 100) -> None:
        self._collector = collector
        self._max_keys = max_keys

    @classmethod
    def create(cls, view: SpendView | None = None, *, registry: Any = None, max_keys: int = 100) -> BudgetMetrics:
        try:
            from prometheus_client import REGISTRY
        except ImportError:
            return cls(None, max_keys)
        registry = registry or REGISTRY
        with _lock:
            collector = _collectors.get(registry)
            if collector is None:
                collector = _collectors[registry] = _make_collector(registry)
        if view is not None:
            collector.add_view(view)
        collector.max_keys = max_keys
        return cls(collector, max_keys)

    def _bounded(self, budget: Budget, key: str) -> str:
        """The refusal counter's key: the first ``max_keys`` of a budget in this process, then ``other``
        (kept by the registry's collector, so every guard of the process shares one bound)."""
        with _lock:
            seen = self._collector.seen.setdefault(budget.label, set())
            if key in seen or len(seen) < self._max_keys:
                seen.add(key)
                return key
        return OTHER

    def exceeded(self, budget: Budget, key: str) -> None:
        if self._collector is not None:
            self._collector.exceeded.labels(budget.label, _scope(budget, self._bounded(budget, key)),
                                            budget.period).inc()

    def counter_error(self) -> None:
        if self._collector is not None:
            self._collector.counter_errors.inc()


def _make_collector(registry: Any) -> Any:
    from prometheus_client import Counter
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class BudgetCollector(Collector):
        def __init__(self) -> None:
            self.views: list[Callable[[], SpendView | None]] = []
            """Weak references: a guard that is gone is not reported (and not kept alive by its metrics)."""
            self.max_keys = 100
            self.seen: dict[str, set[str]] = {}
            self.exceeded = Counter("vital_budget_exceeded", "LLM calls stopped by a budget.", LABELS,
                                    registry=registry)
            self.counter_errors = Counter("vital_budget_counter_errors", "Budget reservations the shared "
                                          "counter (store or Redis) could not answer.", registry=registry)

        def add_view(self, view: SpendView) -> None:
            ref: Callable[[], SpendView | None] = (weakref.WeakMethod(view) if hasattr(view, "__self__")
                                                   else weakref.ref(view))
            with _lock:
                self.views = [v for v in self.views if v() is not None] + [ref]

        def collect(self) -> Iterator[Any]:
            spend = GaugeMetricFamily("vital_budget_spend_usd", "Spend in the budget's current period (USD).",
                                      labels=LABELS)
            limit = GaugeMetricFamily("vital_budget_limit_usd", "The budget's limit (USD).", labels=LABELS)
            for ref in list(self.views):
                view = ref()
                if view is None:
                    continue
                for budget, keys in view():
                    ordered = sorted(keys, key=lambda item: item[1], reverse=True)
                    shown, rest = ordered[:self.max_keys], ordered[self.max_keys:]
                    if rest:
                        shown.append((OTHER, sum((value for _, value in rest), Decimal(0))))
                    for key, value in shown:
                        labels = [budget.label, _scope(budget, key), budget.period]
                        spend.add_metric(labels, float(value))
                        limit.add_metric(labels, float(budget.amount_usd))
            yield spend
            yield limit

    collector = BudgetCollector()
    registry.register(collector)
    return collector
