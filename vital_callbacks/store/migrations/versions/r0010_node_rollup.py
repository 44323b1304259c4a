"""A second daily rollup, by where calls run: ``llm_cost_daily_node`` holds, per UTC day, tenant, graph,
subgraph, node and tool, the same sums as ``llm_cost_daily``, kept by the same kind of triggers
(:mod:`vital_callbacks.store.migrations.rollup_ddl`). Cost by node or by tool over 30 days then sums a
few thousand rows, not every call of the month (the web UI's overview asks both on every view).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vital_callbacks.store.migrations.rollup_ddl import RollupDDL

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NODE_ROLLUP = RollupDDL("llm_cost_daily_node", "vital_llm_cost_node",
                        (("tenant_id", 256), ("graph", 256), ("subgraph", 256), ("node", 256), ("tool", 256)))


def _is_hypertable(bind: sa.engine.Connection) -> bool:
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first() is None:
        return False
    return bind.execute(sa.text("SELECT 1 FROM timescaledb_information.hypertables "
                                "WHERE hypertable_name = 'llm_calls'")).first() is not None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("sqlite", "postgresql"):
        return  # no rollup there: the analytics read llm_calls alone
    NODE_ROLLUP.create(hypertable=bind.dialect.name == "postgresql" and _is_hypertable(bind))


def downgrade() -> None:
    if op.get_bind().dialect.name in ("sqlite", "postgresql"):
        NODE_ROLLUP.drop()
