"""Budget counters: each stop budget's spend per bucket and period, and the reservations held against it,
so replicas sharing the store reserve atomically before a call instead of summing spend after it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "budget_spend" in existing:  # a store made by create_all (adopted on its first upgrade) has both
        return
    op.create_table(
        "budget_spend",
        sa.Column("budget_id", sa.String(64), primary_key=True),
        sa.Column("bucket", sa.String(64), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("spent", sa.Numeric(24, 12), nullable=False),
        sa.Column("bucket_label", sa.String(256), nullable=True),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("reservation_id", sa.String(64), primary_key=True),
        sa.Column("budget_id", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount", sa.Numeric(24, 12), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_budget_reservations_bucket", "budget_reservations", ["budget_id", "bucket", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_reservations_bucket", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budget_spend")
