"""Step 5: a graph run's and a tool's totals (tokens, cost, calls, unpriced calls) from the LLM calls under it.

Calls end before their root (and before the tools they were made in), so each call adds to the running
totals of its trace and of every enclosing tool, which take them when they end. One that never ends (a
crash mid-trace) is forgotten after ``max_open`` open totals.

A graph run that ended first (cancelled by a client that went away, failed in one branch while
another still ran) says how many of its calls were still running: it is held until they arrive, at
most ``LATE_CALLS_WAIT_S``, and released with them in its totals (a flush releases it at once).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from vital_callbacks.core.events import ENCLOSING_TOOLS, LATE_CALLS, Event, GraphRun, LLMCall, TokenUsage, ToolCall

_ZERO = Decimal(0)
LATE_CALLS_WAIT_S = 60.0
"""How long a graph run waits for calls that outlived it; a model call still running after that is
not coming (its process moved on) or is counted in ``llm_calls`` alone."""


@dataclass
class _Totals:
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Decimal | None = None
    calls: int = 0
    unpriced: int = 0


@dataclass
class _Held:
    cls: type[Event]
    fields: dict[str, Any]
    waiting: int
    until: float


class RollUp:
    kinds = (LLMCall, GraphRun, ToolCall)

    def __init__(self, max_open: int = 50_000) -> None:
        self._open: OrderedDict[str, _Totals] = OrderedDict()
        self._max_open = max_open
        self._held: dict[str, _Held] = {}
        self._ready: list[_Held] = []

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        if cls is LLMCall or issubclass(cls, LLMCall):
            self.llm(f)
        elif issubclass(cls, GraphRun) and f.get(LATE_CALLS):
            pass  # held by hold(), once every processor has run over it
        elif issubclass(cls, (GraphRun, ToolCall)):
            self.take(f)

    def hold(self, cls: type[Event], f: dict[str, Any]) -> None:
        """Keep a finished graph run (every processor run over it) until its late calls arrive."""
        self._held[f["run_id"]] = _Held(cls, f, f[LATE_CALLS], time.monotonic() + LATE_CALLS_WAIT_S)

    @property
    def held(self) -> int:
        """Graph runs waiting for their late calls (submitted, not yet passed on to any sink)."""
        return len(self._held) + len(self._ready)

    def after_fork(self) -> None:
        """In a forked child: the parent's open totals and held runs are the parent's to deliver."""
        self._open.clear()
        self._held.clear()
        self._ready.clear()

    def release(self, everything: bool = False) -> list[tuple[type[Event], dict[str, Any]]]:
        """Held graph runs whose late calls have all arrived, or waited long enough (all of them when
        ``everything``: a flush), with their totals."""
        ready, self._ready = self._ready, []
        if self._held:
            now = time.monotonic()
            for run_id, held in list(self._held.items()):
                if everything or held.until <= now:
                    ready.append(self._held.pop(run_id))
        out = []
        for held in ready:
            del held.fields[LATE_CALLS]
            self.take(held.fields)
            out.append((held.cls, held.fields))
        return out

    def llm(self, f: dict[str, Any]) -> None:
        owners = f.pop(ENCLOSING_TOOLS, ())
        trace_id = f["trace_id"]
        if trace_id != f["run_id"]:  # a bare model call is its own trace: no root to add it to
            owners = (trace_id, *owners)
        for owner in owners:
            self._add(owner, f)
        held = self._held.get(trace_id) if self._held else None
        if held is not None:
            held.waiting -= 1
            if held.waiting <= 0:
                self._ready.append(self._held.pop(trace_id))

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
