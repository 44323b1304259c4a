"""Events -> Langfuse observations: type, name, fields and trace attributes, with no I/O.

Usage follows Langfuse's convention, where the detail keys are *addends* of the total (``input`` is the
uncached part, ``input_cache_read`` / ``input_cache_creation`` the cached parts; ``output`` excludes
``output_reasoning``). Ours follows LangChain's, where ``input`` already includes cache reads and
writes, so the numbers are split here; ``total`` is passed as is. Cost is passed as ``cost_details`` so
Langfuse shows our price rather than inferring its own.

A call we have no price for gets no ``cost_details`` (sending 0 would claim it was free) and metadata
``unpriced: true``. Langfuse sums a trace's cost from its generations, so such a trace's cost there
leaves those calls out; the graph run says so in the trace's metadata (``vital_cost_usd``, the priced
sum; ``vital_unpriced_calls``; ``vital_cost_is_lower_bound``), where it can be read and filtered on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from langfuse import (
    LangfuseAgent,
    LangfuseGeneration,
    LangfuseRetriever,
    LangfuseSpan,
    LangfuseTool,
)

from vital_callbacks.core.events import Event, GraphRun, LLMCall, NodeRun, RetrieverCall, TokenUsage, ToolCall
from vital_callbacks.core.redaction import Redactor
from vital_callbacks.sinks.langfuse._sdk import RUN_ID_ATTRIBUTE

_RUN_ID_KEY = RUN_ID_ATTRIBUTE.rsplit(".", 1)[1]
_TEXT_LIMIT = 200  # Langfuse's limit for propagated trace attributes


@dataclass
class Observation:
    name: str
    cls: type[Any]
    fields: dict[str, Any] = field(default_factory=dict)
    trace_attributes: dict[str, Any] = field(default_factory=dict)


def usage_details(usage: TokenUsage) -> dict[str, int]:
    """Our usage as Langfuse ``usage_details`` (addends plus ``total``)."""
    details = {
        "input": max(0, usage.input - usage.cache_read - usage.cache_write),
        "output": max(0, usage.output - usage.reasoning),
        "total": usage.total,
    }
    if usage.cache_read:
        details["input_cache_read"] = usage.cache_read
    if usage.cache_write:
        details["input_cache_creation"] = usage.cache_write
    if usage.reasoning:
        details["output_reasoning"] = usage.reasoning
    return details


def trace_attributes(event: Event) -> dict[str, Any]:
    """Trace-level attributes, set on every observation (Langfuse aggregates them per trace)."""
    out: dict[str, Any] = {}
    if event.user_id:
        out["user_id"] = event.user_id[:_TEXT_LIMIT]
    if event.session_id:
        out["session_id"] = event.session_id[:_TEXT_LIMIT]
    if event.tags:
        out["tags"] = [t[:_TEXT_LIMIT] for t in event.tags]
    if event.graph:
        out["trace_name"] = event.graph[:_TEXT_LIMIT]
    metadata = {"tenant_id": event.tenant_id, "graph": event.graph, "vital_trace_id": event.trace_id}
    out["metadata"] = {k: v[:_TEXT_LIMIT - 2] for k, v in metadata.items() if v}
    if isinstance(event, GraphRun) and event.parent_run_id is None:
        out["metadata"].update(_trace_cost(event))
    return out


def _trace_cost(run: GraphRun) -> dict[str, Any]:
    """The root run's spend on the trace itself: Langfuse's own trace total skips unpriced generations."""
    cost: dict[str, Any] = {"vital_unpriced_calls": run.unpriced_calls,
                            "vital_cost_is_lower_bound": run.unpriced_calls > 0}
    if run.cost_usd is not None:
        cost["vital_cost_usd"] = str(run.cost_usd)
    return cost


def is_unpriced(call: LLMCall) -> bool:
    """Had tokens but no price (a failed call without usage has nothing to price and is not unpriced)."""
    return call.cost is None and call.token_source != "none"


def _status(event: Event, redact: Redactor) -> dict[str, Any]:
    if event.status == "error":
        message = f"{event.error_type or 'Error'}: {event.error_message or ''}".rstrip(": ")
        return {"level": "ERROR", "status_message": redact(message)}
    if event.status == "interrupted":
        return {"level": "WARNING", "status_message": "interrupted"}
    return {}


def _metadata(event: Event, **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {_RUN_ID_KEY: event.run_id, "node": event.node, "status": event.status}
    if event.error_type:
        md["error_type"] = event.error_type
    md.update(extra)
    return {k: v for k, v in md.items() if v is not None}


def describe(event: Event, content: Redactor | None, redact: Redactor) -> Observation:
    """The observation for one event; ``content`` is the redactor for captured text, ``None`` to omit it."""
    status = _status(event, redact)
    attrs = trace_attributes(event)
    if isinstance(event, LLMCall):
        return _generation(event, content, status, attrs)
    if isinstance(event, NodeRun):
        md = _metadata(event, step=event.step, checkpoint_ns=event.checkpoint_ns)
        return Observation(event.node or "node", LangfuseSpan, {"metadata": md, **status}, attrs)
    if isinstance(event, ToolCall):
        fields: dict[str, Any] = {"metadata": _metadata(event), **status}
        if content is not None:
            fields["input"] = content.optional(event.input)
            fields["output"] = content.optional(event.output)
        return Observation(event.name or "tool", LangfuseTool, fields, attrs)
    if isinstance(event, RetrieverCall):
        fields = {"metadata": _metadata(event, documents=event.documents), **status}
        if content is not None:
            fields["input"] = content.optional(event.query)
        return Observation(event.name or "retriever", LangfuseRetriever, fields, attrs)
    if isinstance(event, GraphRun):
        md = _metadata(event, llm_calls=event.llm_calls, unpriced_calls=event.unpriced_calls,
                       cost_usd=str(event.cost_usd) if event.cost_usd is not None else None,
                       cost_is_lower_bound=event.unpriced_calls > 0,
                       usage=usage_details(event.usage), interrupts=event.interrupts or None,
                       resumed=event.resumed or None)
        name = event.name or event.graph or "graph"
        return Observation(name, LangfuseAgent, {"metadata": md, **status}, attrs)
    return Observation(event.kind, LangfuseSpan, {"metadata": _metadata(event), **status}, attrs)


def _generation(event: LLMCall, content: Redactor | None, status: dict[str, Any],
                attrs: dict[str, Any]) -> Observation:
    params = {k: v for k, v in (("temperature", event.temperature), ("max_tokens", event.max_tokens))
              if v is not None}
    md = _metadata(event, provider=event.provider, requested_model=event.requested_model,
                   token_source=event.token_source, finish_reason=event.finish_reason,
                   streamed=event.streamed,
                   cache_hit=event.cache_hit, price_source=event.cost.source if event.cost else None,
                   unpriced=is_unpriced(event),
                   saved_cost_usd=str(event.saved_cost) if event.saved_cost is not None else None,
                   time_to_first_token_s=event.time_to_first_token_s)
    fields: dict[str, Any] = {"metadata": md, "model": event.model, "model_parameters": params or None,
                              **status}
    if not event.usage.is_empty:
        fields["usage_details"] = usage_details(event.usage)
    if event.cost is not None:
        fields["cost_details"] = {"input": float(event.cost.input), "output": float(event.cost.output),
                                  "total": float(event.cost.total)}
    if event.time_to_first_token_s is not None:
        fields["completion_start_time"] = event.started_at + timedelta(seconds=event.time_to_first_token_s)
    if content is not None:
        fields["input"] = content.optional(event.prompt)
        fields["output"] = content.optional(event.completion)
    return Observation(event.model or event.provider or "llm", LangfuseGeneration, fields, attrs)
