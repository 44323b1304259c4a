"""Worker-side processing between the handler and the sinks: estimate, price, roll up, redact.

Everything here is too slow for the caller's thread (tokenizing, catalog matching), so the pipeline
runs it on its dispatcher thread; sinks only ever see finished events.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from vital_callbacks.budgets import BudgetGuard
from vital_callbacks.events import (
    RAW_LLM_OUTPUT,
    Cost,
    Draft,
    Event,
    GraphRun,
    LLMCall,
    RetrieverCall,
    TokenUsage,
    ToolCall,
)
from vital_callbacks.pricing import PriceBook
from vital_callbacks.tokens import count_tokens
from vital_callbacks.usage import Reading, as_snapshot, completion_text, message_text, prompt_text, read

logger = logging.getLogger("vital_callbacks")

_MAX_OPEN_TRACES = 50_000
_ZERO = Decimal(0)
_NO_USAGE = TokenUsage()
_NOTHING_READ = Reading(None, None, False, None)


@dataclass
class _Totals:
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Decimal | None = None
    calls: int = 0
    unpriced: int = 0


class Enricher:
    """The processor the pipeline runs on every event (a structlog-style callable)."""

    def __init__(self, prices: PriceBook, *, capture_content: bool = False, budgets: BudgetGuard | None = None) -> None:
        self.prices = prices
        self.budgets = budgets
        self.capture_content = capture_content
        self.estimated_calls = 0
        self._open: OrderedDict[str, _Totals] = OrderedDict()

    def __call__(self, item: Event | Draft) -> Event:
        fields: dict[str, Any]
        if item.__class__ is Draft:
            cls, fields = item.cls, item
        elif isinstance(item, (LLMCall, GraphRun, ToolCall, RetrieverCall)):
            cls, fields = type(item), _fields_of(item)  # built elsewhere (tests, custom hooks)
        else:
            return item  # type: ignore[return-value]
        if issubclass(cls, LLMCall):
            self._llm(fields)
        elif issubclass(cls, GraphRun):
            self._graph(fields)
        elif issubclass(cls, ToolCall):
            self._tool(fields)
        elif issubclass(cls, RetrieverCall) and not self.capture_content:
            fields["query"] = None
        return cls(**fields)  # the event's one construction (see Draft)

    def _llm(self, f: dict[str, Any]) -> None:
        response = as_snapshot(f.pop("raw_output", None), f.pop(RAW_LLM_OUTPUT, None))
        raw_input = f.pop("raw_input", None)
        reading = read(response) if response is not None else _NOTHING_READ
        provider_usage = reading.usage
        model = reading.model or f.get("model")
        usage: TokenUsage = provider_usage or f.get("usage") or _NO_USAGE
        source = "provider" if provider_usage is not None else f.get("token_source", "provider")
        cache_hit = f.get("cache_hit", False) or reading.cache_hit
        prompt, completion = f.get("prompt"), f.get("completion")
        if self.capture_content or provider_usage is None:
            if prompt is None:
                prompt = prompt_text(raw_input)
            if completion is None and response is not None:
                completion = completion_text(response)
        # A failed call with no reported usage stays unpriced rather than estimated: whether the
        # provider billed anything for it is unknowable here, and a guess would be a made-up cost.
        if source == "none" and f.get("status", "success") == "success" and (prompt or completion):
            try:
                inp = count_tokens(prompt or "", model)
                out = count_tokens(completion or "", model)
            except Exception:
                logger.exception("vital-callbacks: tiktoken estimate failed for model %r", model)
            else:
                usage, source = TokenUsage(input=inp, output=out, total=inp + out), "estimate"
                self.estimated_calls += 1
        cost: Cost | None = f.get("cost")
        saved: Decimal | None = f.get("saved_cost")
        if cost is None and source != "none":  # already priced on the caller's thread when a stop budget needs it
            price = self.prices.price(f.get("provider"), model, usage, f.get("start_time", 0.0))
            if cache_hit:
                cost, saved = Cost(_ZERO, _ZERO, _ZERO, "cache"), (price.total if price else None)
            else:
                cost = price
            if self.budgets is not None and cost is not None:
                self.budgets.record(f.get("tenant_id"), f.get("user_id"), f.get("graph"), cost.total, f["run_id"])
        if f["trace_id"] != f["run_id"]:
            self._roll_up(f["trace_id"], usage, cost, priced=cost is not None or source == "none")
        if not self.capture_content:
            prompt = completion = None
        f["model"] = model
        f["usage"] = usage
        f["token_source"] = source
        f["cost"] = cost
        f["saved_cost"] = saved
        f["cache_hit"] = cache_hit
        f["prompt"] = prompt
        f["completion"] = completion
        if not f.get("finish_reason"):
            f["finish_reason"] = reading.finish_reason

    def _tool(self, f: dict[str, Any]) -> None:
        output = f.pop("raw_output", None)
        if not self.capture_content:
            f["input"] = f["output"] = None
            return
        content = getattr(output, "content", output)
        f["output"] = message_text(content) if output is not None else f.get("output")

    def _roll_up(self, trace_id: str, usage: TokenUsage, cost: Cost | None, *, priced: bool) -> None:
        totals = self._open.get(trace_id)
        if totals is None:
            totals = self._open[trace_id] = _Totals()
            if len(self._open) > _MAX_OPEN_TRACES:  # a root that never ended; do not grow forever
                self._open.popitem(last=False)
        totals.usage = totals.usage + usage
        totals.calls += 1
        if cost is not None:
            totals.cost = (totals.cost or _ZERO) + cost.total
        elif not priced:
            totals.unpriced += 1

    def _graph(self, f: dict[str, Any]) -> None:
        totals = self._open.pop(f["run_id"], None)
        if totals is not None:
            f["usage"] = totals.usage
            f["cost_usd"] = totals.cost
            f["llm_calls"] = totals.calls
            f["unpriced_calls"] = totals.unpriced


def _fields_of(event: Event) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in fields(event)}
