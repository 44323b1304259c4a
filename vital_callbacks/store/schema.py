"""The SQL store's tables, on the package's own ``MetaData``: one row per event, keyed by ``run_id``.

Private on purpose: an application's ``SQLModel.metadata`` / ``Base.metadata`` never sees these
tables, so its ``create_all()`` does not create them and its own ``scores`` table does not collide.
The schema itself comes from the Alembic migrations (:mod:`vital_callbacks.store.migrate`); these
definitions are what the writers and the read side build statements from. Indexed for the questions
the analytics ask: cost by time range, by tenant over time, by model over time, a whole trace.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

metadata = MetaData()
"""Ours alone; ``vital_callbacks.store.migrations`` compares against it."""

NAME = 256
ID = 64


def _cost(name: str) -> Column[Any]:
    """A USD amount: exact NUMERIC(24, 12), null when unpriced."""
    return Column(name, Numeric(24, 12), nullable=True)


def _int(name: str, default: int = 0) -> Column[Any]:
    return Column(name, Integer, nullable=False, default=default)


COUNT = BigInteger().with_variant(Integer(), "sqlite")
"""A token count: BIGINT on PostgreSQL (a long context's sums pass 2^31), SQLite's INTEGER (64-bit
already, and a column type SQLite cannot change in place)."""


def _count(name: str) -> Column[Any]:
    return Column(name, COUNT, nullable=False, default=0)


def _event_columns() -> list[Column[Any]]:
    """What every event row has: identity, place in the tree, attribution, timing, outcome."""
    return [
        Column("run_id", String(ID), primary_key=True),
        Column("parent_run_id", String(ID), nullable=True),
        Column("trace_id", String(ID), nullable=False, index=True),
        Column("tenant_id", String(NAME), nullable=True),
        Column("user_id", String(NAME), nullable=True),
        Column("session_id", String(NAME), nullable=True),
        Column("graph", String(NAME), nullable=True),
        Column("node", String(NAME), nullable=True),
        Column("tags", Text, nullable=True),
        Column("metadata", Text, nullable=True),  # migration 0008
        Column("thread_id", String(NAME), nullable=True),  # migration 0008
        Column("subgraph", String(NAME), nullable=True),  # migration 0009
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("ended_at", DateTime(timezone=True), nullable=False),
        Column("duration_s", Float, nullable=False, default=0.0),
        Column("status", String(16), nullable=False, default="success"),
        Column("error_type", String(NAME), nullable=True),
        Column("error_message", Text, nullable=True),
    ]


TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
                 "reasoning_tokens")


BILLING_COLUMNS = ("cache_write_1h_tokens", "input_audio_tokens", "cache_audio_read_tokens", "output_audio_tokens",
                   "web_searches")
"""Billed units of an LLM call beyond the token totals (breakdowns of them, or per-request fees)."""


def _token_columns() -> list[Column[Any]]:
    return [_count(name) for name in TOKEN_COLUMNS]


graph_runs = Table(
    "graph_runs", metadata,
    *_event_columns(),
    *_token_columns(),
    Column("name", String(NAME), nullable=False, default=""),
    _cost("cost_usd"),
    _int("llm_calls"),
    _int("unpriced_calls"),
    _int("interrupts"),
    Column("resumed", Boolean, nullable=False, default=False),
    Index("ix_graph_runs_started_at", "started_at"),
    Index("ix_graph_runs_tenant_started", "tenant_id", "started_at"),
)

node_runs = Table(
    "node_runs", metadata,
    *_event_columns(),
    Column("step", Integer, nullable=True),
    Column("checkpoint_ns", Text, nullable=True),
    Index("ix_node_runs_started_at", "started_at"),
    Index("ix_node_runs_graph_node_started", "graph", "node", "started_at"),
)

llm_calls = Table(
    "llm_calls", metadata,
    *_event_columns(),
    *_token_columns(),
    Column("provider", String(128), nullable=True),
    Column("model", String(NAME), nullable=True),
    Column("requested_model", String(NAME), nullable=True),
    Column("temperature", Float, nullable=True),
    Column("max_tokens", Integer, nullable=True),
    Column("token_source", String(16), nullable=False, default="provider"),
    _cost("input_cost"),
    _cost("output_cost"),
    _cost("total_cost"),
    Column("price_source", String(NAME), nullable=True),
    Column("time_to_first_token_s", Float, nullable=True),
    Column("streamed", Boolean, nullable=False, default=False),
    Column("finish_reason", String(64), nullable=True),
    Column("cache_hit", Boolean, nullable=False, default=False),
    _cost("saved_cost"),
    Column("prompt", Text, nullable=True),
    Column("completion", Text, nullable=True),
    # Migration 0005: what else the provider billed, and the cost's provenance.
    *(_count(name) for name in BILLING_COLUMNS),
    Column("service_tier", String(64), nullable=True),
    Column("price_detail", String(1024), nullable=True),
    Column("raw_usage", Text, nullable=True),
    Column("tool", String(NAME), nullable=True),  # migration 0008: the tool a call was made in
    Index("ix_llm_calls_started_at", "started_at"),
    Index("ix_llm_calls_tenant_started", "tenant_id", "started_at"),
    Index("ix_llm_calls_model_started", "model", "started_at"),
)

tool_calls = Table(
    "tool_calls", metadata,
    *_event_columns(),
    Column("name", String(NAME), nullable=False, default=""),
    Column("input", Text, nullable=True),
    Column("output", Text, nullable=True),
    # Migration 0008: the totals of the LLM calls made inside the tool.
    *_token_columns(),
    _cost("cost_usd"),
    _int("llm_calls"),
    _int("unpriced_calls"),
    Index("ix_tool_calls_started_at", "started_at"),
)

retriever_calls = Table(
    "retriever_calls", metadata,
    *_event_columns(),
    Column("name", String(NAME), nullable=False, default=""),
    _int("documents"),
    Column("query", Text, nullable=True),
    Index("ix_retriever_calls_started_at", "started_at"),
)

scores = Table(
    "scores", metadata,
    Column("score_id", String(ID), primary_key=True),
    Column("target_id", String(ID), nullable=False),  # the run id or trace id the score was given for
    Column("run_id", String(ID), nullable=True),
    Column("trace_id", String(ID), nullable=True),
    Column("matched", Boolean, nullable=False, default=False),  # False until the target is found among the runs
    Column("name", String(NAME), nullable=False),
    Column("data_type", String(16), nullable=False, default="numeric"),
    Column("value", Float, nullable=True),
    Column("string_value", String(1024), nullable=True),
    Column("comment", Text, nullable=True),
    Column("tenant_id", String(NAME), nullable=True),
    Column("user_id", String(NAME), nullable=True),
    Column("session_id", String(NAME), nullable=True),
    Column("graph", String(NAME), nullable=True),
    Column("node", String(NAME), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_scores_created_at", "created_at"),
    Index("ix_scores_trace", "trace_id"),
    Index("ix_scores_name_created", "name", "created_at"),
)


def _sum(name: str) -> Column[Any]:
    return Column(name, BigInteger, nullable=False, default=0)


def _key(name: str, length: int = NAME) -> Column[Any]:
    return Column(name, String(length), primary_key=True, default="")


def _rollup_sums() -> list[Column[Any]]:
    """What a daily rollup keeps per key: the sums the cost analytics ask for."""
    return [_sum("calls"), *(_sum(name) for name in TOKEN_COLUMNS),
            Column("cost_usd", Numeric(30, 12), nullable=False, default=Decimal(0)),
            _sum("unpriced_calls"), _sum("errors"), _sum("cache_hits"),
            Column("saved_usd", Numeric(30, 12), nullable=False, default=Decimal(0))]


llm_cost_daily = Table(
    "llm_cost_daily", metadata,
    Column("day", Date, primary_key=True),
    _key("tenant_id"),
    _key("graph"),
    _key("provider", 128),
    _key("model"),
    *_rollup_sums(),
)
"""LLM calls summed per UTC day, tenant, graph, provider and model (migration 0004).

Kept equal to ``llm_calls`` by the database itself: triggers add every inserted row (only rows
actually inserted, so a replay adds nothing), subtract deleted ones and move updated ones. The
analytics read whole days here and only the partial days at a window's edges from ``llm_calls``.
Missing keys are stored as ``''`` (a primary key cannot be NULL)."""

llm_cost_daily_node = Table(
    "llm_cost_daily_node", metadata,
    Column("day", Date, primary_key=True),
    _key("tenant_id"),
    _key("graph"),
    _key("subgraph"),
    _key("node"),
    _key("tool"),
    *_rollup_sums(),
)
"""The same sums per UTC day, tenant, graph, subgraph, node and tool (migration 0010), kept the same way:
cost by node or by tool over whole days."""

llm_cost_audit = Table(
    "llm_cost_audit", metadata,
    Column("audit_id", Integer, primary_key=True, autoincrement=True),
    Column("reprice_id", String(ID), nullable=False, index=True),
    Column("run_id", String(ID), nullable=False, index=True),
    Column("repriced_at", DateTime(timezone=True), nullable=False),
    _cost("old_input_cost"),
    _cost("old_output_cost"),
    _cost("old_total_cost"),
    Column("old_price_source", String(NAME), nullable=True),
    Column("old_price_detail", String(1024), nullable=True),
    _cost("new_input_cost"),
    _cost("new_output_cost"),
    _cost("new_total_cost"),
    Column("new_price_source", String(NAME), nullable=True),
    Column("new_price_detail", String(1024), nullable=True),
)
"""One row per LLM call whose stored cost ``vital-callbacks reprice`` changed: the cost before and
after, and their sources (migration 0005). ``reprice_id`` names one run of the command."""

budget_spend = Table(
    # A stop budget's spend per bucket and period, kept by atomic conditional updates: what replicas
    # reserve against. ``bucket`` is a hash of the full attribution value (a tenant id of any length);
    # ``bucket_label`` the value as shown (cut to the column).
    "budget_spend", metadata,
    Column("budget_id", String(ID), primary_key=True),
    Column("bucket", String(ID), primary_key=True),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("spent", Numeric(24, 12), nullable=False, default=Decimal(0)),
    Column("bucket_label", String(NAME), nullable=True),
)

budget_reservations = Table(
    # A call's worst-case cost, held from its start until it settles (or the reservation expires: a
    # process that died, a cancelled call that never ended).
    "budget_reservations", metadata,
    Column("reservation_id", String(ID), primary_key=True),
    Column("budget_id", String(ID), nullable=False),
    Column("bucket", String(ID), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("amount", Numeric(24, 12), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_budget_reservations_bucket", "budget_id", "bucket", "expires_at"),
)

EVENT_TABLES: dict[str, Table] = {
    "graph_run": graph_runs,
    "node_run": node_runs,
    "llm_call": llm_calls,
    "tool_call": tool_calls,
    "retriever_call": retriever_calls,
}
"""The five tables of run events, by event kind (scores excluded)."""

TABLES: dict[str, Table] = {**EVENT_TABLES, "score": scores}
"""Every table an event is written to, by event kind."""

__all__ = ["BILLING_COLUMNS", "EVENT_TABLES", "TABLES", "TOKEN_COLUMNS", "graph_runs", "llm_calls", "llm_cost_audit",
           "llm_cost_daily", "llm_cost_daily_node", "metadata",
           "node_runs", "retriever_calls", "scores", "tool_calls"]
