"""The processors the dispatcher runs over every event, in order, structlog-style:
read -> estimate -> price -> budget -> roll-up -> redact, then the event's one construction.

Everything here is too slow for the caller's thread (tokenizing, catalog matching), so the pipeline
runs it on its dispatcher thread; sinks only ever see finished, redacted events.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from vital_callbacks.budgets import BudgetGuard
from vital_callbacks.core.events import Draft, Event, GraphRun, LLMCall, RetrieverCall, ToolCall
from vital_callbacks.core.redaction import Redactor
from vital_callbacks.enrich.estimate import Estimate
from vital_callbacks.enrich.price import Price, RecordSpend
from vital_callbacks.enrich.reading import ReadResponse
from vital_callbacks.enrich.redact import Redact
from vital_callbacks.enrich.rollup import RollUp
from vital_callbacks.pricing.book import PriceBook


class Enricher:
    """The pipeline's processor: a Draft (or an event built elsewhere) in, the finished event out."""

    def __init__(self, prices: PriceBook, *, capture_content: bool = False, budgets: BudgetGuard | None = None,
                 redactor: Redactor | None = None) -> None:
        self.prices = prices
        self.budgets = budgets if budgets is not None else BudgetGuard([])
        self.capture_content = capture_content
        self.read = ReadResponse(capture_content)
        self.estimate = Estimate()
        self.price = Price(prices)
        self.spend = RecordSpend(self.budgets)
        self.rollup = RollUp()
        self.redact = Redact(redactor or Redactor(), capture_content)

    @property
    def estimated_calls(self) -> int:
        return self.estimate.estimated_calls

    def __call__(self, item: Event | Draft) -> Event:
        f: dict[str, Any]
        if item.__class__ is Draft:
            cls, f = item.cls, item
        elif isinstance(item, (LLMCall, GraphRun, ToolCall, RetrieverCall)):
            cls, f = type(item), {fl.name: getattr(item, fl.name) for fl in fields(item)}  # built elsewhere
        else:
            return item  # type: ignore[return-value]
        if issubclass(cls, LLMCall):
            self.read.llm(f)
            self.estimate.llm(f)
            self.price.llm(f)
            self.spend.llm(f)
            self.rollup.llm(f)
            self.redact("llm", f)
        elif issubclass(cls, GraphRun):
            self.rollup.graph(f)
            self.redact("graph", f)
        elif issubclass(cls, ToolCall):
            self.read.tool(f)
            self.redact("tool", f)
        elif issubclass(cls, RetrieverCall):
            self.redact("retriever", f)
        else:
            self.redact("other", f)
        return cls(**f)  # the event's one construction (see Draft)
