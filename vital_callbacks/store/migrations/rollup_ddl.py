"""The DDL of a daily rollup of ``llm_calls`` kept by database triggers, for one set of keys.

Migration 0004 wrote this out for ``llm_cost_daily`` (day, tenant, graph, provider, model) and stays
as it was applied; later rollups are built here from the same rules, so each one is the same machinery:

* PostgreSQL: statement-level triggers with transition tables (a batch of rows costs one grouped
  upsert; ``ON CONFLICT DO NOTHING`` puts only inserted rows in the transition table, so a replay adds
  nothing); row-level triggers where transition tables are refused (TimescaleDB hypertables).
* SQLite: row-level triggers.
* Upserts visit keys in sorted order (no deadlock between writers); emptied rows are pruned by key;
  missing keys are stored as ``''``; ``TRUNCATE llm_calls`` empties the rollup.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op

SUMS = ("calls", "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_usd", "unpriced_calls", "errors", "cache_hits", "saved_usd")


@dataclass(frozen=True)
class RollupDDL:
    table: str
    prefix: str
    """Of its trigger and function names (``vital_llm_cost_node`` -> ``vital_llm_cost_node_insert``...)."""
    keys: tuple[tuple[str, int], ...]
    """Its keys after ``day``: an ``llm_calls`` column of the same name, and its length."""

    @property
    def key_names(self) -> tuple[str, ...]:
        return ("day", *(name for name, _ in self.keys))

    @property
    def triggers(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}_{t}" for t in ("insert", "delete", "update", "row", "truncate"))

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}_{f}" for f in ("add", "remove", "move", "row", "clear"))

    def values(self, row: str, dialect: str) -> list[str]:
        """The rollup key and the one-row sums of ``row`` (``NEW``/``OLD`` or a transition-table alias)."""
        if dialect == "sqlite":
            day = f"coalesce(date({row}.started_at), substr({row}.started_at, 1, 10))"
        else:
            day = f"({row}.started_at AT TIME ZONE 'UTC')::date"
        return [
            day,
            *(f"coalesce({row}.{name}, '')" for name, _ in self.keys),
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

    def _upsert(self, select_sql: str) -> str:
        keys = self.key_names
        sets = ", ".join(f"{c} = {self.table}.{c} + excluded.{c}" for c in SUMS)
        return (f"INSERT INTO {self.table} ({', '.join(keys + SUMS)}) {select_sql} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}")

    def _signed(self, source: str, sign: str) -> str:
        keys = self.key_names
        values = self.values("r", "postgresql")
        columns = [f"{v} AS {name}" for v, name in zip(values[: len(keys)], keys, strict=True)]
        columns += [f"{sign}({v}) AS {name}" for v, name in zip(values[len(keys):], SUMS, strict=True)]
        return f"SELECT {', '.join(columns)} FROM {source} r"

    def _grouped(self, *parts: str) -> str:
        keys = ", ".join(self.key_names)
        sums = ", ".join(f"sum({c})" for c in SUMS)
        return f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join(parts)}) u GROUP BY {keys} ORDER BY {keys}"

    def _prune_touched(self, source: str) -> str:
        keys = self.key_names
        values = self.values("r", "postgresql")[: len(keys)]
        match = " AND ".join(f"d.{k} = k.{k}" for k in keys)
        return (f"DELETE FROM {self.table} d USING (SELECT DISTINCT {', '.join(values)} FROM {source} r) "
                f"AS k({', '.join(keys)}) WHERE {match} AND d.calls = 0")

    def _prune_row(self, row: str, dialect: str) -> str:
        keys = self.key_names
        values = self.values(row, dialect)[: len(keys)]
        match = " AND ".join(f"{k} = {v}" for k, v in zip(keys, values, strict=True))
        return f"DELETE FROM {self.table} WHERE {match} AND calls = 0"

    def _row_upsert(self, row: str, dialect: str, sign: str = "") -> str:
        n = len(self.key_names)
        values = self.values(row, dialect)
        signed = values[:n] + [f"{sign}({v})" for v in values[n:]]
        return self._upsert(f"SELECT {', '.join(signed)}" + (" WHERE true" if dialect == "sqlite" else ""))

    @staticmethod
    def _function(name: str, *statements: str) -> None:
        body = "".join(f"  {statement};\n" for statement in statements)
        op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{body}"
                   "  RETURN NULL;\nEND $$")

    def _truncate_trigger(self) -> None:
        self._function(f"{self.prefix}_clear", f"DELETE FROM {self.table}")
        op.execute(f"CREATE TRIGGER {self.prefix}_truncate AFTER TRUNCATE ON llm_calls "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {self.prefix}_clear()")

    def postgres_statement_triggers(self) -> None:
        added, removed = self._signed("vital_new", ""), self._signed("vital_old", "-")
        p = self.prefix
        self._function(f"{p}_add", self._upsert(self._grouped(added)))
        self._function(f"{p}_remove", self._upsert(self._grouped(removed)), self._prune_touched("vital_old"))
        self._function(f"{p}_move", self._upsert(self._grouped(removed, added)), self._prune_touched("vital_old"))
        op.execute(f"CREATE TRIGGER {p}_insert AFTER INSERT ON llm_calls "
                   f"REFERENCING NEW TABLE AS vital_new FOR EACH STATEMENT EXECUTE FUNCTION {p}_add()")
        op.execute(f"CREATE TRIGGER {p}_delete AFTER DELETE ON llm_calls "
                   f"REFERENCING OLD TABLE AS vital_old FOR EACH STATEMENT EXECUTE FUNCTION {p}_remove()")
        op.execute(f"CREATE TRIGGER {p}_update AFTER UPDATE ON llm_calls "
                   "REFERENCING OLD TABLE AS vital_old NEW TABLE AS vital_new "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {p}_move()")
        self._truncate_trigger()

    def postgres_row_triggers(self) -> None:
        p = self.prefix
        op.execute(f"""
CREATE OR REPLACE FUNCTION {p}_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {self._row_upsert("OLD", "postgresql", "-")};
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    {self._row_upsert("NEW", "postgresql")};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {self._prune_row("OLD", "postgresql")};
  END IF;
  RETURN NULL;
END $$""")
        op.execute(f"CREATE TRIGGER {p}_row AFTER INSERT OR UPDATE OR DELETE ON llm_calls "
                   f"FOR EACH ROW EXECUTE FUNCTION {p}_row()")
        self._truncate_trigger()

    def sqlite_triggers(self) -> None:
        p = self.prefix
        op.execute(f"CREATE TRIGGER {p}_insert AFTER INSERT ON llm_calls BEGIN "
                   f"{self._row_upsert('NEW', 'sqlite')}; END")
        op.execute(f"CREATE TRIGGER {p}_delete AFTER DELETE ON llm_calls BEGIN "
                   f"{self._row_upsert('OLD', 'sqlite', '-')}; {self._prune_row('OLD', 'sqlite')}; END")
        op.execute(f"CREATE TRIGGER {p}_update AFTER UPDATE ON llm_calls BEGIN "
                   f"{self._row_upsert('OLD', 'sqlite', '-')}; {self._row_upsert('NEW', 'sqlite')}; "
                   f"{self._prune_row('OLD', 'sqlite')}; END")

    def create(self, *, hypertable: bool) -> None:
        """Table, the sums of the rows already there, and the triggers, in the upgrade's transaction with
        writers held off on PostgreSQL: every row is counted once, here or by a trigger afterwards."""
        bind = op.get_bind()
        dialect = bind.dialect.name
        if sa.inspect(bind).has_table(self.table):  # made by a create_all, never maintained: refilled
            op.execute(f"DELETE FROM {self.table}")
        else:
            op.create_table(
                self.table,
                sa.Column("day", sa.Date(), nullable=False),
                *[sa.Column(name, sa.String(length), nullable=False) for name, length in self.keys],
                *[sa.Column(name, sa.Numeric(30, 12) if name.endswith("_usd") else sa.BigInteger(), nullable=False)
                  for name in SUMS],
                sa.PrimaryKeyConstraint(*self.key_names),
            )
        if dialect == "postgresql":
            op.execute("LOCK TABLE llm_calls IN SHARE ROW EXCLUSIVE MODE")
        n = len(self.key_names)
        values = self.values("r", dialect)
        order = ", ".join(str(i + 1) for i in range(n))
        sums = ", ".join(f"sum({v})" for v in values[n:])
        op.execute(f"INSERT INTO {self.table} ({', '.join(self.key_names + SUMS)}) "
                   f"SELECT {', '.join(values[:n])}, {sums} FROM llm_calls r GROUP BY {order}")
        if dialect == "postgresql":
            self.postgres_row_triggers() if hypertable else self.postgres_statement_triggers()
        else:
            self.sqlite_triggers()

    def drop(self) -> None:
        dialect = op.get_bind().dialect.name
        for trigger in self.triggers:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON llm_calls" if dialect == "postgresql" else ""))
        if dialect == "postgresql":
            for function in self.functions:
                op.execute(f"DROP FUNCTION IF EXISTS {function}()")
        op.drop_table(self.table)
