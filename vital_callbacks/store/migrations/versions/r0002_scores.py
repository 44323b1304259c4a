"""The ``scores`` table: evaluator and user-feedback scores attached to a run or a trace.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scores",
        sa.Column("score_id", sa.String(64), primary_key=True),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("data_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("string_value", sa.String(1024), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("tenant_id", sa.String(256), nullable=True),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("graph", sa.String(256), nullable=True),
        sa.Column("node", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_scores_created_at", "scores", ["created_at"])
    op.create_index("ix_scores_trace", "scores", ["trace_id"])
    op.create_index("ix_scores_name_created", "scores", ["name", "created_at"])


def downgrade() -> None:
    op.drop_table("scores")
