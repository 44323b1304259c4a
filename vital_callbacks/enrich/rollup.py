"""Step 5: a graph run's and a tool's totals (tokens, cost, calls, unpriced calls) from the LLM calls under it.

Calls end before their root (and before the tools they were made in), so each call adds to the running
totals of its trace and of every enclosing tool, which take them when they end. One that never ends (a
crash mid-trace) is forgotten after ``max_open`` open totals.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from vital_callbacks.core.events import ENCLOSING_TOOLS, Event, GraphRun, LLMCall, TokenUsage, ToolCall

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
        elif issubclass(cls, (GraphRun, ToolCall)):
            self.take(f)

    def llm(self, f: dict[str, Any]) -> None:
        owners = f.pop(ENCLOSING_TOOLS, ())
        trace_id = f["trace_id"]
        if trace_id != f["run_id"]:  # a bare model call is its own trace: no root to add it to
            owners = (trace_id, *owners)
        for owner in owners:
            self._add(owner, f)

    def _add(self, owner: str, f: dict[str, Any]) -> None:
        totals = self._open.get(owner)
        if totals is None:
            totals = self._open[owner] = _Totals()
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)
        cost = f.get("cost")
        totals.usage = totals.usage + f["usage"]
        totals.calls += 1
        if cost is not None:
            totals.cost = (totals.cost or _ZERO) + cost.total
        elif f.get("token_source") != "none":
            totals.unpriced += 1

    def take(self, f: dict[str, Any]) -> None:
        """A graph run or tool ends: the totals of the calls made under it."""
        totals = self._open.pop(f["run_id"], None)
        if totals is not None:
            f["usage"] = totals.usage
            f["cost_usd"] = totals.cost
            f["llm_calls"] = totals.calls
            f["unpriced_calls"] = totals.unpriced

    graph = take
