"""A daily rollup of LLM calls, kept by the database; plain time indexes instead of covering ones.

``llm_cost_daily`` holds, per UTC day, tenant, graph, provider and model, the sums the cost analytics
ask for. Triggers keep it equal to ``llm_calls`` whoever writes there (our writers, a bulk ``COPY``,
a hand-run repricing ``UPDATE``, a retention ``DELETE``):

* PostgreSQL: statement-level triggers with transition tables, so a batch of 512 rows costs one
  grouped upsert, not 512. ``ON CONFLICT DO NOTHING`` puts only the rows actually inserted in the
  transition table, so a replayed batch adds nothing. TimescaleDB hypertables do not allow transition
  tables; there the same sums are kept by row-level triggers (untested here: no TimescaleDB in CI).
* SQLite: row-level triggers (the database is in-process; an upsert per row is cheap there).

The upserts visit keys in sorted order, so two writers' batches lock rollup rows in the same order
and cannot deadlock. Missing keys are stored as ``''``. The existing rows are summed in at upgrade.

With whole days answered by the rollup, the covering indexes of 0003 (which made every insert write
two wide index entries) give way to plain ``(started_at)`` and ``(tenant_id, started_at)`` indexes,
which the partial days at a window's edges need.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEYS = ("day", "tenant_id", "graph", "provider", "model")
SUMS = ("calls", "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_usd", "unpriced_calls", "errors", "cache_hits", "saved_usd")
COVERED = ["model", "status", "token_source", "input_tokens", "output_tokens", "total_tokens",
           "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "total_cost", "saved_cost", "cache_hit"]


def _values(row: str, dialect: str) -> list[str]:
    """The rollup key and the one-row sums of ``row`` (``NEW``/``OLD`` or a transition-table alias)."""
    if dialect == "sqlite":  # SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff"; never NULL for a stray format
        day = f"coalesce(date({row}.started_at), substr({row}.started_at, 1, 10))"
    else:
        day = f"({row}.started_at AT TIME ZONE 'UTC')::date"
    return [
        day,
        f"coalesce({row}.tenant_id, '')",
        f"coalesce({row}.graph, '')",
        f"coalesce({row}.provider, '')",
        f"coalesce({row}.model, '')",
        "1",
        f"{row}.input_tokens",
        f"{row}.output_tokens",
        f"{row}.total_tokens",
        f"{row}.cache_read_tokens",
        f"{row}.cache_write_tokens",
        f"{row}.reasoning_tokens",
        f"coalesce({row}.total_cost, 0)",
        f"CASE WHEN {row}.total_cost IS NULL AND {row}.token_source <> 'none' THEN 1 ELSE 0 END",
        f"CASE WHEN {row}.status = 'error' THEN 1 ELSE 0 END",
        f"CASE WHEN {row}.cache_hit THEN 1 ELSE 0 END",
        f"coalesce({row}.saved_cost, 0)",
    ]


def _upsert(select_sql: str) -> str:
    sets = ", ".join(f"{c} = llm_cost_daily.{c} + excluded.{c}" for c in SUMS)
    return (f"INSERT INTO llm_cost_daily ({', '.join(KEYS + SUMS)}) {select_sql} "
            f"ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET {sets}")


def _signed(source: str, sign: str) -> str:
    """Each row of transition table ``source`` as a rollup key and its (signed) one-row sums."""
    values = _values("r", "postgresql")
    columns = [f"{v} AS {name}" for v, name in zip(values, KEYS + SUMS, strict=True)]
    columns[len(KEYS):] = [f"{sign}({v}) AS {name}" for v, name in zip(values[len(KEYS):], SUMS, strict=True)]
    return f"SELECT {', '.join(columns)} FROM {source} r"


def _grouped(*parts: str) -> str:
    """The parts' sums per key, in key order: one upsert that locks rollup rows in a fixed order, so
    concurrent writers (or an UPDATE moving rows between keys both ways) cannot deadlock."""
    keys = ", ".join(KEYS)
    sums = ", ".join(f"sum({c})" for c in SUMS)
    return f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join(parts)}) u GROUP BY {keys} ORDER BY {keys}"


def _prune_touched(source: str) -> str:
    """Drop the rollup rows the removed rows emptied (only their keys: no scan of the rollup)."""
    values = _values("r", "postgresql")[: len(KEYS)]
    match = " AND ".join(f"d.{k} = k.{k}" for k in KEYS)
    return (f"DELETE FROM llm_cost_daily d USING (SELECT DISTINCT {', '.join(values)} FROM {source} r) "
            f"AS k({', '.join(KEYS)}) WHERE {match} AND d.calls = 0")


def _prune_row(row: str, dialect: str) -> str:
    values = _values(row, dialect)[: len(KEYS)]
    match = " AND ".join(f"{k} = {v}" for k, v in zip(KEYS, values, strict=True))
    return f"DELETE FROM llm_cost_daily WHERE {match} AND calls = 0"


def _plpgsql_function(name: str, *statements: str) -> None:
    body = "".join(f"  {statement};\n" for statement in statements)
    op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}"
               "  RETURN NULL;\nEND $$")


def _postgres_statement_triggers() -> None:
    added, removed = _signed("vital_new", ""), _signed("vital_old", "-")
    _plpgsql_function("vital_llm_cost_daily_add", _upsert(_grouped(added)))
    _plpgsql_function("vital_llm_cost_daily_remove", _upsert(_grouped(removed)), _prune_touched("vital_old"))
    _plpgsql_function("vital_llm_cost_daily_move", _upsert(_grouped(removed, added)), _prune_touched("vital_old"))
    op.execute("CREATE TRIGGER vital_llm_cost_daily_insert AFTER INSERT ON llm_calls "
               "REFERENCING NEW TABLE AS vital_new FOR EACH STATEMENT EXECUTE FUNCTION vital_llm_cost_daily_add()")
    op.execute("CREATE TRIGGER vital_llm_cost_daily_delete AFTER DELETE ON llm_calls "
               "REFERENCING OLD TABLE AS vital_old FOR EACH STATEMENT EXECUTE FUNCTION vital_llm_cost_daily_remove()")
    op.execute("CREATE TRIGGER vital_llm_cost_daily_update AFTER UPDATE ON llm_calls "
               "REFERENCING OLD TABLE AS vital_old NEW TABLE AS vital_new "
               "FOR EACH STATEMENT EXECUTE FUNCTION vital_llm_cost_daily_move()")
    _truncate_trigger()


def _truncate_trigger() -> None:
    """``TRUNCATE llm_calls`` fires no row or insert trigger: empty the rollup with it."""
    _plpgsql_function("vital_llm_cost_daily_clear", "DELETE FROM llm_cost_daily")
    op.execute("CREATE TRIGGER vital_llm_cost_daily_truncate AFTER TRUNCATE ON llm_calls "
               "FOR EACH STATEMENT EXECUTE FUNCTION vital_llm_cost_daily_clear()")


def _row_upsert(row: str, dialect: str, sign: str = "") -> str:
    values = _values(row, dialect)
    signed = values[: len(KEYS)] + [f"{sign}({v})" for v in values[len(KEYS):]]
    select = f"SELECT {', '.join(signed)}" + (" WHERE true" if dialect == "sqlite" else "")
    return _upsert(select)


def _postgres_row_triggers() -> None:
    """For TimescaleDB hypertables, which refuse transition tables."""
    op.execute(f"""
CREATE OR REPLACE FUNCTION vital_llm_cost_daily_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {_row_upsert("OLD", "postgresql", "-")};
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    {_row_upsert("NEW", "postgresql")};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {_prune_row("OLD", "postgresql")};
  END IF;
  RETURN NULL;
END $$""")
    op.execute("CREATE TRIGGER vital_llm_cost_daily_row AFTER INSERT OR UPDATE OR DELETE ON llm_calls "
               "FOR EACH ROW EXECUTE FUNCTION vital_llm_cost_daily_row()")
    _truncate_trigger()


def _sqlite_triggers() -> None:
    # "WHERE true" keeps SQLite from reading the upsert's ON CONFLICT as a join constraint. SQLite has
    # no TRUNCATE; a DELETE without WHERE runs the delete trigger per row.
    op.execute(f"CREATE TRIGGER vital_llm_cost_daily_insert AFTER INSERT ON llm_calls BEGIN "
               f"{_row_upsert('NEW', 'sqlite')}; END")
    op.execute(f"CREATE TRIGGER vital_llm_cost_daily_delete AFTER DELETE ON llm_calls BEGIN "
               f"{_row_upsert('OLD', 'sqlite', '-')}; {_prune_row('OLD', 'sqlite')}; END")
    op.execute(f"CREATE TRIGGER vital_llm_cost_daily_update AFTER UPDATE ON llm_calls BEGIN "
               f"{_row_upsert('OLD', 'sqlite', '-')}; {_row_upsert('NEW', 'sqlite')}; "
               f"{_prune_row('OLD', 'sqlite')}; END")


def _is_hypertable(bind: sa.engine.Connection) -> bool:
    has_timescale = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first()
    if has_timescale is None:
        return False
    found = bind.execute(sa.text("SELECT 1 FROM timescaledb_information.hypertables "
                                 "WHERE hypertable_name = 'llm_calls'")).first()
    return found is not None


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    _swap_indexes()
    if dialect not in ("sqlite", "postgresql"):
        return  # no rollup: the analytics read llm_calls alone there (see analytics/_rollup.py)
    if sa.inspect(bind).has_table("llm_cost_daily"):
        # Made by a ``create_all`` (an app's own ``SQLModel.metadata``) without its triggers: never
        # maintained, so it is refilled below rather than trusted.
        op.execute("DELETE FROM llm_cost_daily")
    else:
        op.create_table(
            "llm_cost_daily",
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("tenant_id", sa.String(256), nullable=False),
            sa.Column("graph", sa.String(256), nullable=False),
            sa.Column("provider", sa.String(128), nullable=False),
            sa.Column("model", sa.String(256), nullable=False),
            *[sa.Column(name, sa.Numeric(30, 12) if name.endswith("_usd") else sa.BigInteger(), nullable=False)
              for name in SUMS],
            sa.PrimaryKeyConstraint(*KEYS),
        )
    # Sum what is there and create the triggers in the upgrade's one transaction, with writers held
    # off on PostgreSQL, so every row is counted once: here, or by a trigger afterwards.
    if dialect == "postgresql":
        op.execute("LOCK TABLE llm_calls IN SHARE ROW EXCLUSIVE MODE")
    values = _values("r", dialect)
    order = ", ".join(str(i + 1) for i in range(len(KEYS)))
    sums = ", ".join(f"sum({v})" for v in values[len(KEYS):])
    op.execute(f"INSERT INTO llm_cost_daily ({', '.join(KEYS + SUMS)}) "
               f"SELECT {', '.join(values[: len(KEYS)])}, {sums} FROM llm_calls r GROUP BY {order}")
    if dialect == "postgresql":
        if _is_hypertable(bind):
            _postgres_row_triggers()
        else:
            _postgres_statement_triggers()
    else:
        _sqlite_triggers()


def _swap_indexes() -> None:
    """Covering indexes out, plain ones in; tolerant of a schema made by ``create_all`` (plain already)."""
    op.execute("DROP INDEX IF EXISTS ix_llm_calls_started_cov")
    op.execute("DROP INDEX IF EXISTS ix_llm_calls_tenant_started_cov")
    op.execute("CREATE INDEX IF NOT EXISTS ix_llm_calls_started_at ON llm_calls (started_at)")
    op.execute("CREATE INDEX IF NOT EXISTS ix_llm_calls_tenant_started ON llm_calls (tenant_id, started_at)")


TRIGGERS = ("vital_llm_cost_daily_insert", "vital_llm_cost_daily_delete", "vital_llm_cost_daily_update",
            "vital_llm_cost_daily_row", "vital_llm_cost_daily_truncate")
FUNCTIONS = ("vital_llm_cost_daily_add", "vital_llm_cost_daily_remove", "vital_llm_cost_daily_move",
             "vital_llm_cost_daily_row", "vital_llm_cost_daily_clear")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_llm_calls_tenant_started", table_name="llm_calls")
    op.drop_index("ix_llm_calls_started_at", table_name="llm_calls")
    op.create_index("ix_llm_calls_tenant_started_cov", "llm_calls", ["tenant_id", "started_at"],
                    postgresql_include=COVERED)
    op.create_index("ix_llm_calls_started_cov", "llm_calls", ["started_at"],
                    postgresql_include=["tenant_id", *COVERED])
    if dialect not in ("sqlite", "postgresql"):
        return
    for trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON llm_calls" if dialect == "postgresql" else ""))
    if dialect == "postgresql":
        for function in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_table("llm_cost_daily")
