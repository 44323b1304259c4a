"""What else an LLM call billed (one-hour cache writes, audio, web searches), the service tier, the
cost's provenance and the raw provider usage it was computed from; an audit table for repricing.

New ``llm_calls`` columns: ``cache_write_1h_tokens``, ``input_audio_tokens``,
``cache_audio_read_tokens``, ``output_audio_tokens``, ``web_searches`` (0 for existing rows: they were
never read), ``service_tier``, ``price_detail`` and ``raw_usage`` (null). ``llm_cost_audit`` keeps, per
repriced call, the cost before and after and both sources. The daily rollup's triggers are untouched:
they name their columns.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COUNTS = ("cache_write_1h_tokens", "input_audio_tokens", "cache_audio_read_tokens", "output_audio_tokens",
          "web_searches")


def _cost(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Numeric(24, 12), nullable=True)


def upgrade() -> None:
    # A database adopted from ``create_all`` (see ``migrate._adopt_unversioned``) may have them already.
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("llm_calls")}
    columns: list[sa.Column[Any]] = [
        *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in COUNTS),
        sa.Column("service_tier", sa.String(64), nullable=True),
        sa.Column("price_detail", sa.String(1024), nullable=True),
        sa.Column("raw_usage", sa.Text(), nullable=True),
    ]
    with op.batch_alter_table("llm_calls") as batch:
        for column in columns:
            if column.name not in have:
                batch.add_column(column)
    if "llm_cost_audit" in inspector.get_table_names():
        return
    op.create_table(
        "llm_cost_audit",
        sa.Column("audit_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("reprice_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("repriced_at", sa.DateTime(timezone=True), nullable=False),
        _cost("old_input_cost"),
        _cost("old_output_cost"),
        _cost("old_total_cost"),
        sa.Column("old_price_source", sa.String(256), nullable=True),
        sa.Column("old_price_detail", sa.String(1024), nullable=True),
        _cost("new_input_cost"),
        _cost("new_output_cost"),
        _cost("new_total_cost"),
        sa.Column("new_price_source", sa.String(256), nullable=True),
        sa.Column("new_price_detail", sa.String(1024), nullable=True),
    )
    op.create_index("ix_llm_cost_audit_reprice_id", "llm_cost_audit", ["reprice_id"])
    op.create_index("ix_llm_cost_audit_run_id", "llm_cost_audit", ["run_id"])


def downgrade() -> None:
    op.drop_table("llm_cost_audit")
    # Not batch mode: on SQLite it rebuilds the table, and 0004's rollup triggers would go with it.
    # SQLite has dropped columns in place since 3.35 (2021).
    for name in ("raw_usage", "price_detail", "service_tier", *reversed(COUNTS)):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE llm_calls DROP COLUMN {name}")
        else:
            op.drop_column("llm_calls", name)
