"""vital-callbacks: observability and cost accounting for LangChain / LangGraph in one handler.

    handler = VitalCallbackHandler()
    graph.invoke(inputs, config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
"""

from vital_callbacks.attribution import attribute
from vital_callbacks.budgets import Budget, BudgetExceeded
from vital_callbacks.events import (
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
from vital_callbacks.handler import VitalCallbackHandler, score
from vital_callbacks.pipeline import PipelineStats
from vital_callbacks.pricing import PriceBook
from vital_callbacks.settings import Settings
from vital_callbacks.sinks.base import ExportResult, Sink
from vital_callbacks.sinks.memory import InMemorySink

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
    "Score",
    "Settings",
    "Sink",
    "TokenUsage",
    "ToolCall",
    "VitalCallbackHandler",
    "attribute",
    "score",
]
