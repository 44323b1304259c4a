"""Migrations on SQLite and PostgreSQL: from empty, from the previous revision, and no drift from tables.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection

from tests import pg_cluster
from tests.conftest import require_service
from vital_callbacks.store import migrate as db
from vital_callbacks.store import schema as tables
from vital_callbacks.store.migrations import VERSION_TABLE

EVENT_TABLES = {"graph_runs", "node_runs", "llm_calls", "tool_calls", "retriever_calls"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    require_service(pg_cluster.reachable(), f"no PostgreSQL at {db.mask_url(pg_cluster.SHARED_URL)}")
    with pg_cluster.fresh_database() as url:
        yield url


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, "compare_type": True})
    return list(compare_metadata(context, tables.metadata))


def schema_diff(url: str) -> list[Any]:
    """Alembic autogenerate's comparison of the live schema with the package's own ``MetaData``."""
    return db._on(url, _diff)


def table_names(url: str) -> set[str]:
    return db._on(url, lambda conn: set(inspect(conn).get_table_names()))


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    """From an empty database, ``upgrade`` builds exactly the schema tables.py declares (no autogenerate diff)."""
    assert db.current(empty_url) is None
    db.upgrade(empty_url)
    assert db.current(empty_url) == db.head() == "0010"
    assert schema_diff(empty_url) == []
    assert table_names(empty_url) == EVENT_TABLES | {"scores", "llm_cost_daily", "llm_cost_daily_node",
                                                     "llm_cost_audit", "budget_spend", "budget_reservations",
                                                     VERSION_TABLE}


def test_upgrade_from_the_first_revision(empty_url: str) -> None:
    """A database at 0001 (event tables only) gains ``scores`` and the daily rollup on upgrade."""
    db.upgrade(empty_url, "0001")
    assert db.current(empty_url) == "0001"
    assert table_names(empty_url) == EVENT_TABLES | {VERSION_TABLE}
    missing = [d for d in schema_diff(empty_url) if isinstance(d, tuple)]  # lists: 0006's type changes
    assert {d[0] for d in missing} <= {"add_table", "add_index", "add_column"}
    assert {d[1].name for d in missing if d[0] == "add_table"} == {"scores", "llm_cost_daily", "llm_cost_audit",
                                                                  "budget_spend", "budget_reservations",
                                                                  "llm_cost_daily_node"}
    db.upgrade(empty_url)
    assert db.current(empty_url) == db.head()
    assert schema_diff(empty_url) == []


def test_upgrade_from_0004(empty_url: str) -> None:
    """A database at 0004 gains the billing and provenance columns of ``llm_calls`` and the audit table;
    rows already stored keep their values (0 for the new counts)."""
    db.upgrade(empty_url, "0004")
    changes = [d for d in schema_diff(empty_url) if isinstance(d, tuple)]  # lists: 0006's type changes
    added_columns = {(d[2], d[3].name) for d in changes if d[0] == "add_column"}
    assert added_columns == {
        *(("llm_calls", c) for c in ("cache_write_1h_tokens", "input_audio_tokens", "cache_audio_read_tokens",
                                     "output_audio_tokens", "web_searches", "service_tier", "price_detail",
                                     "raw_usage", "tool")),  # 0005, and 0008's tool
        *(("tool_calls", c) for c in (*tables.TOKEN_COLUMNS, "cost_usd", "llm_calls", "unpriced_calls")),  # 0008
        *((t, c) for t in ("graph_runs", "node_runs", "llm_calls", "tool_calls", "retriever_calls")
          for c in ("metadata", "thread_id", "subgraph"))}  # 0008, 0009
    assert {(d[0], d[1].name) for d in changes if d[0] != "add_column"} == {
        ("add_table", "llm_cost_audit"),
        ("add_index", "ix_llm_cost_audit_reprice_id"), ("add_index", "ix_llm_cost_audit_run_id"),
        ("add_table", "budget_spend"), ("add_table", "budget_reservations"),
        ("add_index", "ix_budget_reservations_bucket"), ("add_table", "llm_cost_daily_node")}
    db.upgrade(empty_url)
    assert db.current(empty_url) == db.head()
    assert schema_diff(empty_url) == []


def test_upgrade_from_0005(empty_url: str) -> None:
    """At 0005, PostgreSQL's token columns are INTEGER; 0006 makes them BIGINT (SQLite's INTEGER is 64-bit
    already: no change there), 0007 adds the budget counters."""
    db.upgrade(empty_url, "0005")
    changes = schema_diff(empty_url)
    tables_added = {d[1].name for d in changes if isinstance(d, tuple) and d[0] == "add_table"}
    assert tables_added == {"budget_spend", "budget_reservations", "llm_cost_daily_node"}
    columns_added = {(d[2], d[3].name) for d in changes if isinstance(d, tuple) and d[0] == "add_column"}
    assert {table for table, _ in columns_added} == {"graph_runs", "node_runs", "llm_calls", "tool_calls",
                                                     "retriever_calls"}  # 0008, 0009
    changes = [c for c in changes if not isinstance(c, tuple)]
    if empty_url.startswith("sqlite"):
        assert changes == []
    else:
        modified = {(op[0], op[2], op[3]) for change in changes for op in change}
        assert {kind for kind, _, _ in modified} == {"modify_type"}
        assert {(table, column) for _, table, column in modified} == {
            *(("llm_calls", c) for c in tables.TOKEN_COLUMNS + tables.BILLING_COLUMNS),
            *(("graph_runs", c) for c in tables.TOKEN_COLUMNS)}
    db.upgrade(empty_url)
    assert db.current(empty_url) == "0010"
    assert schema_diff(empty_url) == []


def test_a_count_past_two_to_the_31_is_stored(empty_url: str) -> None:
    """A token count PostgreSQL's INTEGER would reject (and with it the row) fits the column."""
    from vital_callbacks.core.events import LLMCall, TokenUsage
    from vital_callbacks.store.rows import to_row

    db.upgrade(empty_url)
    big = 3_000_000_000
    row = to_row(LLMCall(run_id="big", parent_run_id=None, trace_id="big", model="m",
                         usage=TokenUsage(input=big, output=1, total=big + 1)))
    engine = create_engine(empty_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(tables.llm_calls.insert(), [row])
        stored = conn.execute(tables.llm_calls.select().with_only_columns(tables.llm_calls.c.input_tokens)).scalar()
        daily = conn.execute(tables.llm_cost_daily.select().with_only_columns(
            tables.llm_cost_daily.c.input_tokens)).scalar()
    engine.dispose()
    assert stored == daily == big


def _rollup_triggers(url: str) -> set[str]:
    def read(conn: Connection) -> set[str]:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        else:
            rows = conn.exec_driver_sql("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        return {name for (name,) in rows if name.startswith("vital_llm_cost_daily")}

    return db._on(url, read)


def _downgrade_to_0004(conn: Connection) -> None:
    config = db._config()
    config.attributes["connection"] = conn
    command.downgrade(config, "0004")


def test_0005_keeps_the_rollup_triggers_both_ways(empty_url: str) -> None:
    """Adding (and, on downgrade, dropping) the billing columns must not rebuild ``llm_calls`` without
    0004's rollup triggers (SQLite's batch mode would)."""
    db.upgrade(empty_url, "0004")
    before = _rollup_triggers(empty_url)
    assert before
    db.upgrade(empty_url)
    assert _rollup_triggers(empty_url) == before
    db._on(empty_url, _downgrade_to_0004)
    assert db.current(empty_url) == "0004"
    assert _rollup_triggers(empty_url) == before
    assert schema_diff(empty_url) != []  # the 0005 columns are gone again


def test_upgrade_is_idempotent(empty_url: str) -> None:
    """Running ``upgrade`` at every start (auto-migrate) is harmless once the schema is current."""
    db.upgrade(empty_url)
    db.upgrade(empty_url)
    assert db.current(empty_url) == db.head()


def test_replicas_migrating_at_once_do_not_collide() -> None:
    """Several processes auto-migrating one PostgreSQL at the same moment serialise on an advisory lock."""
    require_service(pg_cluster.reachable(), "no PostgreSQL")
    errors: list[BaseException] = []

    def migrate(url: str) -> None:
        try:
            db.upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    with pg_cluster.fresh_database() as url:
        threads = [threading.Thread(target=migrate, args=(url,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert db.current(url) == db.head()


def test_a_database_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    """Tables created by ``create_all`` (no version table) are stamped with their revision, then upgraded."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    tables.metadata.create_all(engine, tables=list(tables.EVENT_TABLES.values()))
    engine.dispose()
    db.upgrade(url)
    assert db.current(url) == db.head()
    assert schema_diff(url) == []


def test_urls_are_masked_for_logs() -> None:
    """The password never appears in the form of a URL that we log."""
    masked = db.mask_url("postgresql://app:hunter2@db.internal:5432/prod")
    assert "hunter2" not in masked and masked.startswith("postgresql://app:***@db.internal")
