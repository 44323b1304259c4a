"""SQLModel tables of the SQL store: one row per event, keyed by ``run_id`` (idempotent inserts).

Indexed for the questions the analytics ask: cost by time range, by tenant over time, by model over
time, and everything of one trace.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, Numeric, Text
from sqlmodel import Field, SQLModel


def _cost() -> Any:
    """A USD amount column: exact NUMERIC(24, 12), null when unpriced."""
    return Field(default=None, sa_type=Numeric(24, 12))


class _EventRow(SQLModel):
    run_id: str = Field(primary_key=True, max_length=64)
    parent_run_id: str | None = Field(default=None, max_length=64)
    trace_id: str = Field(max_length=64, index=True)
    tenant_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256)
    session_id: str | None = Field(default=None, max_length=256)
    graph: str | None = Field(default=None, max_length=256)
    node: str | None = Field(default=None, max_length=256)
    tags: str | None = Field(default=None, sa_type=Text)
    started_at: datetime = Field(sa_type=DateTime(timezone=True))
    ended_at: datetime = Field(sa_type=DateTime(timezone=True))
    duration_s: float = 0.0
    status: str = Field(default="success", max_length=16)
    error_type: str | None = Field(default=None, max_length=256)
    error_message: str | None = Field(default=None, sa_type=Text)


class _TokenColumns(SQLModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class GraphRunRow(_EventRow, _TokenColumns, table=True):
    __tablename__ = "graph_runs"
    __table_args__ = (
        Index("ix_graph_runs_started_at", "started_at"),
        Index("ix_graph_runs_tenant_started", "tenant_id", "started_at"),
    )

    name: str = Field(default="", max_length=256)
    cost_usd: Decimal | None = _cost()
    llm_calls: int = 0
    unpriced_calls: int = 0
    interrupts: int = 0
    resumed: bool = False


class NodeRunRow(_EventRow, table=True):
    __tablename__ = "node_runs"
    __table_args__ = (
        Index("ix_node_runs_started_at", "started_at"),
        Index("ix_node_runs_graph_node_started", "graph", "node", "started_at"),
    )

    step: int | None = None
    checkpoint_ns: str | None = Field(default=None, sa_type=Text)


class LLMCallRow(_EventRow, _TokenColumns, table=True):
    __tablename__ = "llm_calls"
    __table_args__ = (
        Index("ix_llm_calls_started_at", "started_at"),
        Index("ix_llm_calls_tenant_started", "tenant_id", "started_at"),
        Index("ix_llm_calls_model_started", "model", "started_at"),
    )

    provider: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=256)
    requested_model: str | None = Field(default=None, max_length=256)
    temperature: float | None = None
    max_tokens: int | None = None
    token_source: str = Field(default="provider", max_length=16)
    input_cost: Decimal | None = _cost()
    output_cost: Decimal | None = _cost()
    total_cost: Decimal | None = _cost()
    price_source: str | None = Field(default=None, max_length=256)
    time_to_first_token_s: float | None = None
    streamed: bool = False
    finish_reason: str | None = Field(default=None, max_length=64)
    cache_hit: bool = False
    saved_cost: Decimal | None = _cost()
    prompt: str | None = Field(default=None, sa_type=Text)
    completion: str | None = Field(default=None, sa_type=Text)


class ToolCallRow(_EventRow, table=True):
    __tablename__ = "tool_calls"
    __table_args__ = (Index("ix_tool_calls_started_at", "started_at"),)

    name: str = Field(default="", max_length=256)
    input: str | None = Field(default=None, sa_type=Text)
    output: str | None = Field(default=None, sa_type=Text)


class RetrieverCallRow(_EventRow, table=True):
    __tablename__ = "retriever_calls"
    __table_args__ = (Index("ix_retriever_calls_started_at", "started_at"),)

    name: str = Field(default="", max_length=256)
    documents: int = 0
    query: str | None = Field(default=None, sa_type=Text)


class ScoreRow(SQLModel, table=True):
    """A quality score (evaluator, user feedback) attached to a run or a trace."""

    __tablename__ = "scores"
    __table_args__ = (
        Index("ix_scores_created_at", "created_at"),
        Index("ix_scores_trace", "trace_id"),
        Index("ix_scores_name_created", "name", "created_at"),
    )

    score_id: str = Field(primary_key=True, max_length=64)
    target_id: str = Field(max_length=64, description="The run id or trace id the score was given for.")
    run_id: str | None = Field(default=None, max_length=64)
    trace_id: str | None = Field(default=None, max_length=64)
    matched: bool = Field(default=False, description="False until the target id is found among the runs.")
    name: str = Field(max_length=256)
    data_type: str = Field(default="numeric", max_length=16)
    value: float | None = None
    string_value: str | None = Field(default=None, max_length=1024)
    comment: str | None = Field(default=None, sa_type=Text)
    tenant_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256)
    session_id: str | None = Field(default=None, max_length=256)
    graph: str | None = Field(default=None, max_length=256)
    node: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


def _sum() -> Any:
    return Field(default=0, sa_type=BigInteger)


class LLMCostDailyRow(SQLModel, table=True):
    """LLM calls summed per UTC day, tenant, graph, provider and model (migration 0004).

    Kept equal to ``llm_calls`` by the database itself: triggers add every inserted row (only rows
    actually inserted, so a replay adds nothing), subtract deleted ones and move updated ones. The
    analytics read whole days here and only the partial days at a window's edges from ``llm_calls``.
    Missing keys are stored as ``''`` (a primary key cannot be NULL).
    """

    __tablename__ = "llm_cost_daily"

    day: date = Field(sa_type=Date, primary_key=True)
    tenant_id: str = Field(default="", max_length=256, primary_key=True)
    graph: str = Field(default="", max_length=256, primary_key=True)
    provider: str = Field(default="", max_length=128, primary_key=True)
    model: str = Field(default="", max_length=256, primary_key=True)
    calls: int = _sum()
    input_tokens: int = _sum()
    output_tokens: int = _sum()
    total_tokens: int = _sum()
    cache_read_tokens: int = _sum()
    cache_write_tokens: int = _sum()
    reasoning_tokens: int = _sum()
    cost_usd: Decimal = Field(default=Decimal(0), sa_type=Numeric(30, 12))
    unpriced_calls: int = _sum()
    errors: int = _sum()
    cache_hits: int = _sum()
    saved_usd: Decimal = Field(default=Decimal(0), sa_type=Numeric(30, 12))


ROW_TYPES: dict[str, type[SQLModel]] = {
    "graph_run": GraphRunRow,
    "node_run": NodeRunRow,
    "llm_call": LLMCallRow,
    "tool_call": ToolCallRow,
    "retriever_call": RetrieverCallRow,
}
EVENT_TABLES = dict(ROW_TYPES)
"""The five tables of run events (scores excluded)."""
ROW_TYPES["score"] = ScoreRow

__all__ = ["ROW_TYPES", "Column", "GraphRunRow", "LLMCallRow", "LLMCostDailyRow", "NodeRunRow", "RetrieverCallRow",
           "ScoreRow", "ToolCallRow"]
