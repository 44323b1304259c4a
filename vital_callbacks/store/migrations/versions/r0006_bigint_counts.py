"""Token counts as BIGINT on PostgreSQL, so a count past 2^31 (a long context's sums, a bad provider
value that slipped through) is stored instead of rejecting its row.

``llm_calls`` and ``graph_runs``: the token columns, and ``llm_calls``' billing counts of 0005. The
daily rollup's sums are BIGINT already. On PostgreSQL the table is rewritten (a lock for the length
of the rewrite); the rollup's triggers name their columns and stay as they are. SQLite's INTEGER is
64-bit already: nothing to do there.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TOKENS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
          "reasoning_tokens")
BILLING = ("cache_write_1h_tokens", "input_audio_tokens", "cache_audio_read_tokens", "output_audio_tokens",
           "web_searches")
COLUMNS = {"llm_calls": TOKENS + BILLING, "graph_runs": TOKENS}


def _alter(type_: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        # One ALTER TABLE per table: PostgreSQL rewrites it once for all its columns.
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {type_}" for c in columns)
        op.execute(sa.text(f"ALTER TABLE {table} {changes}"))


def upgrade() -> None:
    _alter("BIGINT")


def downgrade() -> None:
    _alter("INTEGER")
