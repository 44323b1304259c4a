"""Tools own their calls: ``tool_calls`` carries the totals of the LLM calls made inside each tool (as
``graph_runs`` does for a whole run), and ``llm_calls.tool`` names the tool a call was made in, for
cost by tool. Every event table gains the run's own ``metadata`` (JSON) and LangGraph's ``thread_id``.
Rows stored before have 0 and NULL.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

EVENT_TABLES = ("graph_runs", "node_runs", "llm_calls", "tool_calls", "retriever_calls")
TOKENS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
          "reasoning_tokens")


def _count() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have_tool = {c["name"] for c in inspector.get_columns("tool_calls")}
    for name in TOKENS:
        if name not in have_tool:  # a store made by create_all (adopted on its first upgrade) has them
            op.add_column("tool_calls", sa.Column(name, _count(), nullable=False, server_default="0"))
    if "cost_usd" not in have_tool:
        op.add_column("tool_calls", sa.Column("cost_usd", sa.Numeric(24, 12), nullable=True))
    for name in ("llm_calls", "unpriced_calls"):
        if name not in have_tool:
            op.add_column("tool_calls", sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    if "tool" not in {c["name"] for c in inspector.get_columns("llm_calls")}:
        op.add_column("llm_calls", sa.Column("tool", sa.String(256), nullable=True))
    for table in EVENT_TABLES:
        have = {c["name"] for c in inspector.get_columns(table)}
        if "metadata" not in have:
            op.add_column(table, sa.Column("metadata", sa.Text(), nullable=True))
        if "thread_id" not in have:
            op.add_column(table, sa.Column("thread_id", sa.String(256), nullable=True))


def downgrade() -> None:
    # Not batch mode: on SQLite it rebuilds the table, and 0004's rollup triggers on llm_calls would go
    # with it; SQLite drops columns in place since 3.35.
    drops = [("llm_calls", "tool"), *(("tool_calls", n) for n in (*TOKENS, "cost_usd", "llm_calls", "unpriced_calls")),
             *((t, n) for t in EVENT_TABLES for n in ("metadata", "thread_id"))]
    for table, name in drops:
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
        else:
            op.drop_column(table, name)
