"""Step 5: a graph run's totals (tokens, cost, calls, unpriced calls) from the LLM calls under it.

Calls end before their root, so each call adds to its trace's running totals and the root takes
them when it ends. A root that never ends (a crash mid-trace) is forgotten after ``max_open`` traces.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from vital_callbacks.core.events import Event, GraphRun, LLMCall, TokenUsage

_ZERO = Decimal(0)


@dataclass
class _Totals:
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Decimal | None = None
    calls: int = 0
    unpriced: int = 0


class RollUp:
    def __init__(self, max_open: int = 50_000) -> None:
        self._open: OrderedDict[str, _Totals] = OrderedDict()
        self._max_open = max_open

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        if issubclass(cls, LLMCall):
            self.llm(f)
        elif issubclass(cls, GraphRun):
            self.graph(f)

    def llm(self, f: dict[str, Any]) -> None:
        trace_id = f["trace_id"]
        if trace_id == f["run_id"]:
            return  # a bare model call is its own trace: nothing to add it to
        totals = self._open.get(trace_id)
        if totals is None:
            totals = self._open[trace_id] = _Totals()
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)
        cost = f.get("cost")
        totals.usage = totals.usage + f["usage"]
        totals.calls += 1
        if cost is not None:
            totals.cost = (totals.cost or _ZERO) + cost.total
        elif f.get("token_source") != "none":
            totals.unpriced += 1

    def graph(self, f: dict[str, Any]) -> None:
        totals = self._open.pop(f["run_id"], None)
        if totals is not None:
            f["usage"] = totals.usage
            f["cost_usd"] = totals.cost
            f["llm_calls"] = totals.calls
            f["unpriced_calls"] = totals.unpriced
