"""The processors the dispatcher runs over every event, in order, structlog-style:
read -> estimate -> price -> budget -> roll-up -> redact, then the event's one construction.

Everything here is too slow for the caller's thread (tokenizing, catalog matching), so the pipeline
runs it on its dispatcher thread; sinks only ever see finished, redacted events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msgspec.structs import asdict

from vital_callbacks.budgets import BudgetGuard
from vital_callbacks.core.events import LATE_CALLS, Draft, Event, GraphRun, LLMCall, RetrieverCall, ToolCall
from vital_callbacks.core.redaction import Redactor
from vital_callbacks.enrich.estimate import Estimate
from vital_callbacks.enrich.price import Price, RecordSpend
from vital_callbacks.enrich.reading import ReadResponse
from vital_callbacks.enrich.redact import Redact
from vital_callbacks.enrich.rollup import RollUp
from vital_callbacks.pricing.book import PriceBook

Processor = Callable[[type[Event], dict[str, Any]], None]
"""One step: reads and completes an event's fields in place (structlog-style, but before the event is
built). Its ``kinds`` attribute names the event classes it acts on: it is run over those only."""


class Enricher:
    """The pipeline's processor: a Draft (or an event built elsewhere) in, the finished event out."""

    def __init__(self, prices: PriceBook, *, capture_content: bool = False, budgets: BudgetGuard | None = None,
                 redactor: Redactor | None = None, metadata_keys: frozenset[str] | None = None) -> None:
        self.prices = prices
        self.budgets = budgets if budgets is not None else BudgetGuard([])
        self.capture_content = capture_content
        self.estimate = Estimate()
        self.rollup = RollUp()
        self.reading = ReadResponse(capture_content)
        self.processors: list[Processor] = [
            self.reading, self.estimate, Price(prices), RecordSpend(self.budgets), self.rollup,
            Redact(redactor or Redactor(), capture_content, metadata_keys)]
        """Run in this order over every event's fields, each over the kinds it acts on."""
        self._steps: dict[type[Event], tuple[Processor, ...]] = {}
        """The processors that act on each event class, in order (decided once per class)."""

    @property
    def estimated_calls(self) -> int:
        return self.estimate.estimated_calls

    @property
    def failed_estimates(self) -> int:
        return self.estimate.failed_estimates

    @property
    def unreadable_usage(self) -> int:
        return self.reading.unreadable_usage

    def __call__(self, item: Event | Draft) -> Event | None:
        """The finished event; ``None`` for a graph run held until its late calls arrive (see
        :meth:`released`)."""
        f: dict[str, Any]
        if item.__class__ is Draft:
            cls, f = item.cls, item
        elif isinstance(item, (LLMCall, GraphRun, ToolCall, RetrieverCall)):
            cls, f = type(item), asdict(item)  # built elsewhere
        else:
            return item  # type: ignore[return-value]
        steps = self._steps.get(cls)
        if steps is None:
            steps = self._steps[cls] = tuple(p for p in self.processors
                                             if issubclass(cls, getattr(p, "kinds", (Event,))))
        for processor in steps:
            processor(cls, f)
        if f.get(LATE_CALLS):
            self.rollup.hold(cls, f)  # only now: a processor that failed above leaves nothing held
            return None
        return cls(**f)  # the event's one construction (see Draft)

    @property
    def held(self) -> int:
        return self.rollup.held

    def after_fork(self) -> None:
        self.rollup.after_fork()

    def released(self, everything: bool = False) -> list[Draft]:
        """Held graph runs now complete (all of them when ``everything``), every processor run over them."""
        return [Draft.of(cls, f) for cls, f in self.rollup.release(everything)]
