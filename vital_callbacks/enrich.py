"""Worker-side processing between the handler and the sinks: estimate, price, roll up, redact.

Everything here is too slow for the caller's thread (tokenizing, catalog matching), so the pipeline
runs it on its dispatcher thread; sinks only ever see finished events.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from decimal import Decimal

from vital_callbacks.budgets import BudgetGuard
from vital_callbacks.events import Cost, Event, GraphRun, LLMCall, RetrieverCall, TokenUsage, ToolCall
from vital_callbacks.pricing import PriceBook
from vital_callbacks.tokens import count_tokens
from vital_callbacks.usage import (
    ResultSnapshot,
    completion_text,
    extract_usage,
    finish_reason,
    is_cache_hit,
    message_text,
    prompt_text,
    response_model,
)

logger = logging.getLogger("vital_callbacks")

_MAX_OPEN_TRACES = 50_000
_ZERO = Decimal(0)


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

    def __call__(self, event: Event) -> Event:
        if isinstance(event, LLMCall):
            return self._llm(event)
        if isinstance(event, GraphRun):
            return self._graph(event)
        if isinstance(event, ToolCall):
            return self._tool(event)
        if not self.capture_content and isinstance(event, RetrieverCall) and event.query is not None:
            return replace(event, query=None)
        return event

    def _llm(self, event: LLMCall) -> LLMCall:
        response = event.raw_output if isinstance(event.raw_output, ResultSnapshot) else None
        provider_usage = extract_usage(response) if response is not None else None
        model = (response_model(response) if response is not None else None) or event.model
        usage = provider_usage or event.usage
        source = "provider" if provider_usage is not None else event.token_source
        cache_hit = event.cache_hit or (response is not None and is_cache_hit(response))
        prompt, completion = event.prompt, event.completion
        if self.capture_content or provider_usage is None:
            if prompt is None:
                prompt = prompt_text(event.raw_input)
            if completion is None and response is not None:
                completion = completion_text(response)
        # A failed call with no reported usage stays unpriced rather than estimated: whether the
        # provider billed anything for it is unknowable here, and a guess would be a made-up cost.
        if source == "none" and event.status == "success" and (prompt or completion):
            try:
                inp = count_tokens(prompt or "", model)
                out = count_tokens(completion or "", model)
            except Exception:
                logger.exception("vital-callbacks: tiktoken estimate failed for model %r", model)
            else:
                usage, source = TokenUsage(input=inp, output=out, total=inp + out), "estimate"
                self.estimated_calls += 1
        cost: Cost | None = event.cost
        saved: Decimal | None = event.saved_cost
        if cost is None and source != "none":  # already priced on the caller's thread when a stop budget needs it
            price = self.prices.price(event.provider, model, usage, event.start_time)
            if cache_hit:
                cost, saved = Cost(_ZERO, _ZERO, _ZERO, "cache"), (price.total if price else None)
            else:
                cost = price
            if self.budgets is not None and cost is not None:
                self.budgets.record(event.tenant_id, event.user_id, event.graph, cost.total, event.run_id)
        if event.trace_id != event.run_id:
            self._roll_up(event.trace_id, usage, cost, priced=cost is not None or source == "none")
        if not self.capture_content:
            prompt = completion = None
        # One copy, not one per step: each replace() of a ~35-field slotted dataclass costs ~5 µs.
        return replace(event, model=model, usage=usage, token_source=source, cost=cost, saved_cost=saved,
                       cache_hit=cache_hit, prompt=prompt, completion=completion, raw_input=None, raw_output=None,
                       finish_reason=event.finish_reason or (finish_reason(response) if response else None))

    def _tool(self, event: ToolCall) -> ToolCall:
        if not self.capture_content:
            if event.input is None and event.raw_output is None:
                return event
            return replace(event, input=None, output=None, raw_output=None)
        output = event.raw_output
        content = getattr(output, "content", output)
        text = message_text(content) if output is not None else None
        return replace(event, output=text, raw_output=None)

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

    def _graph(self, event: GraphRun) -> GraphRun:
        totals = self._open.pop(event.run_id, None)
        if totals is None:
            return event
        return replace(event, usage=totals.usage, cost_usd=totals.cost, llm_calls=totals.calls,
                       unpriced_calls=totals.unpriced)
