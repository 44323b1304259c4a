"""A node is known by the graph it runs in: every event table gains ``subgraph``, the compiled name of
the subgraph a run executed in (NULL at a trace's own graph), so two graphs' same-named nodes, and a
subgraph's node and its parent's, stay apart in ``report --by node`` and the analytics.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EVENT_TABLES = ("graph_runs", "node_runs", "llm_calls", "tool_calls", "retriever_calls")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table in EVENT_TABLES:
        if "subgraph" not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column("subgraph", sa.String(256), nullable=True))


def downgrade() -> None:
    # Not batch mode, as in 0008: SQLite drops columns in place, and llm_calls keeps its rollup triggers.
    for table in EVENT_TABLES:
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN subgraph")
        else:
            op.drop_column(table, "subgraph")
