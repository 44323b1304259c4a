"""vital-callbacks: observability and cost accounting for LangChain / LangGraph in one handler.

    handler = VitalCallbackHandler()
    graph.invoke(inputs, config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})

A handler is a cheap view on a :class:`Runtime`, which owns the threads and sinks (one per process,
built from the environment on first use, unless you build your own).

The names below are imported on first use (PEP 562), so ``import vital_callbacks`` and the CLI's
``--help`` do not pay for LangChain, LangGraph and SQLAlchemy before something needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vital_callbacks.core.lazy import lazy_names

if TYPE_CHECKING:
    from vital_callbacks.budgets import Budget, BudgetExceeded, retry_unless_budget
    from vital_callbacks.capture import VitalCallbackHandler, score
    from vital_callbacks.core.attribution import attribute, capture_traces
    from vital_callbacks.core.events import (
        Cost,
        Event,
        GraphRun,
        LLMCall,
        NodeRun,
        RetrieverCall,
        Score,
        TokenUsage,
        ToolCall,
    )
    from vital_callbacks.core.settings import Settings
    from vital_callbacks.pricing import PriceBook
    from vital_callbacks.runtime import PipelineStats, Runtime
    from vital_callbacks.sinks.base import ExportResult, Sink, SinkContext
    from vital_callbacks.sinks.memory import InMemorySink

_HOMES = {
    "Budget": "vital_callbacks.budgets",
    "BudgetExceeded": "vital_callbacks.budgets",
    "Cost": "vital_callbacks.core.events",
    "Event": "vital_callbacks.core.events",
    "ExportResult": "vital_callbacks.sinks.base",
    "GraphRun": "vital_callbacks.core.events",
    "InMemorySink": "vital_callbacks.sinks.memory",
    "LLMCall": "vital_callbacks.core.events",
    "NodeRun": "vital_callbacks.core.events",
    "PipelineStats": "vital_callbacks.runtime",
    "PriceBook": "vital_callbacks.pricing",
    "RetrieverCall": "vital_callbacks.core.events",
    "Runtime": "vital_callbacks.runtime",
    "Score": "vital_callbacks.core.events",
    "Settings": "vital_callbacks.core.settings",
    "Sink": "vital_callbacks.sinks.base",
    "SinkContext": "vital_callbacks.sinks.base",
    "TokenUsage": "vital_callbacks.core.events",
    "ToolCall": "vital_callbacks.core.events",
    "VitalCallbackHandler": "vital_callbacks.capture",
    "attribute": "vital_callbacks.core.attribution",
    "capture_traces": "vital_callbacks.core.attribution",
    "retry_unless_budget": "vital_callbacks.budgets",
    "score": "vital_callbacks.capture",
}

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Cost",
    "Event",
    "ExportResult",
    "GraphRun",
    "InMemorySink",
    "LLMCall",
    "NodeRun",
    "PipelineStats",
    "PriceBook",
    "RetrieverCall",
    "Runtime",
    "Score",
    "Settings",
    "Sink",
    "SinkContext",
    "TokenUsage",
    "ToolCall",
    "VitalCallbackHandler",
    "attribute",
    "capture_traces",
    "retry_unless_budget",
    "score",
]


if not TYPE_CHECKING:  # type checkers see the imports above; an unknown name stays an error there
    __getattr__, __dir__ = lazy_names(__name__, _HOMES, globals())
