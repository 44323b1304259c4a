"""The SQL store: the reference graph's rows, idempotent inserts, bad rows isolated, content opt-in."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.graphs import FANOUT, INPUT, METADATA, build_graph
from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.sinks.sql import SQLSink


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'vital.db'}"


def count(engine: Engine, table: str, where: str = "1=1") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one())


def test_reference_graph_rows(sqlite_url: str) -> None:
    """One run of the reference graph gives the expected rows in all five tables, with costs."""
    sql = SQLSink(sqlite_url)
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(), sinks=[sql, memory])
    build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    assert handler.flush()
    engine = sql.engine
    assert count(engine, "graph_runs") == 1
    assert count(engine, "node_runs") == 4 + FANOUT
    assert count(engine, "llm_calls") == 2
    assert count(engine, "tool_calls") == FANOUT
    assert count(engine, "retriever_calls") == 1
    assert count(engine, "llm_calls", "tenant_id = 'acme' AND user_id = 'u1' AND session_id = 's1'") == 2
    with engine.connect() as conn:
        row = conn.execute(text("SELECT input_tokens, cache_read_tokens, reasoning_tokens, total_cost, token_source,"
                                " prompt FROM llm_calls WHERE node = 'plan'")).one()
        root_cost = conn.execute(text("SELECT cost_usd FROM graph_runs")).scalar_one()
        mode = conn.execute(text("PRAGMA journal_mode")).scalar_one()
    plan = next(c for c in memory.of(LLMCall) if c.node == "plan")
    assert plan.cost is not None
    assert row[:3] == (1200, 1024, 256) and row[4] == "provider" and row[5] is None
    assert Decimal(str(row[3])) == plan.cost.total
    assert Decimal(str(root_cost)).quantize(Decimal("1e-9")) == sum(
        (c.cost.total for c in memory.of(LLMCall) if c.cost), Decimal(0)).quantize(Decimal("1e-9"))
    assert mode == "wal"
    handler.shutdown()


def test_inserts_are_idempotent(sqlite_url: str) -> None:
    """Exporting the same events twice (a retry or replay) never stores a call twice."""
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(), sinks=[memory])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    handler.flush()
    sql = SQLSink(sqlite_url)
    sql.export(memory.events)
    sql.export(memory.events)
    assert count(sql.engine, "llm_calls") == 2 and count(sql.engine, "node_runs") == 4 + FANOUT
    handler.shutdown()


def test_bad_text_is_cleaned_and_long_names_truncated(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """NUL bytes, lone surrogates and over-long names are stored cleaned or truncated, with a warning."""
    sql = SQLSink(sqlite_url)
    calls = [
        LLMCall(run_id="a", parent_run_id=None, trace_id="a", model="m\x00odel", tenant_id="x" * 10_000,
                error_message="bad \udcff utf8"),
        LLMCall(run_id="b", parent_run_id=None, trace_id="b", model="fine"),
    ]
    sql.export(calls)
    with sql.engine.connect() as conn:
        rows: dict[str, str] = dict(conn.execute(text("SELECT run_id, model FROM llm_calls")).all())
        tenant = conn.execute(text("SELECT tenant_id FROM llm_calls WHERE run_id='a'")).scalar_one()
        message = conn.execute(text("SELECT error_message FROM llm_calls WHERE run_id='a'")).scalar_one()
    assert rows == {"a": "model", "b": "fine"}
    assert len(tenant) == 256 and "truncated" in caplog.text
    assert message == "bad ? utf8"


def test_one_rejected_row_does_not_lose_its_batch(sqlite_url: str) -> None:
    """When the database rejects one row, the other rows of the batch are still stored."""
    sql = SQLSink(sqlite_url)
    sql.prepare()  # opens and migrates the store (the pipeline's worker does this before its first export)
    with sql.engine.begin() as conn:  # a constraint only the middle row violates
        conn.execute(text("CREATE TRIGGER reject BEFORE INSERT ON llm_calls WHEN NEW.model = 'poison' "
                          "BEGIN SELECT RAISE(ABORT, 'rejected'); END"))
    batch = [LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i), model="poison" if i == 1 else "ok")
             for i in range(3)]
    sql.export(batch)
    assert count(sql.engine, "llm_calls") == 2 and sql.rejected_rows == 1


def test_content_only_with_capture(sqlite_url: str) -> None:
    """Prompt, completion and tool text are stored only when VITAL_CAPTURE_CONTENT is on."""
    sql = SQLSink(sqlite_url)
    handler = VitalCallbackHandler(Settings(capture_content=True), sinks=[sql])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    handler.flush()
    with sql.engine.connect() as conn:
        prompt, completion = conn.execute(text("SELECT prompt, completion FROM llm_calls WHERE node='plan'")).one()
        tool_in, tool_out = conn.execute(text("SELECT input, output FROM tool_calls LIMIT 1")).one()
    assert prompt == "plan for what does it cost?" and completion == "a b c"
    assert "topic" in tool_in and tool_out.startswith("facts about topic")
    handler.shutdown()


def test_default_store_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no sinks given, VITAL_DATABASE_URL chooses the SQLite file the handler writes."""
    monkeypatch.setenv("VITAL_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with VitalCallbackHandler() as handler:
        build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert (tmp_path / "env.db").exists()
    from sqlalchemy import create_engine

    assert count(create_engine(f"sqlite:///{tmp_path / 'env.db'}"), "graph_runs") == 1


def test_a_value_the_driver_cannot_bind_costs_only_its_row(sqlite_url: str) -> None:
    """An integer too large for SQLite is skipped with its row; the rest of the batch is stored."""
    sql = SQLSink(sqlite_url)
    batch = [LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i), max_tokens=2**70 if i == 1 else 10)
             for i in range(3)]
    from vital_callbacks import ExportResult

    assert sql.export(batch) is ExportResult.SUCCESS
    assert count(sql.engine, "llm_calls") == 2 and sql.rejected_rows == 1


def test_a_score_in_a_batch_that_goes_row_by_row_still_matches_its_run(sqlite_url: str) -> None:
    """Row by row (one row rejected), runs are still stored before scores, so a score that comes first in
    the batch is matched to its run from the same batch, as on the batch path."""
    from vital_callbacks.core.scores import make_score

    sql = SQLSink(sqlite_url)
    sql.prepare()
    with sql.engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER reject BEFORE INSERT ON llm_calls WHEN NEW.model = 'poison' "
                          "BEGIN SELECT RAISE(ABORT, 'rejected'); END"))
    run = LLMCall(run_id="run-1", parent_run_id=None, trace_id="trace-1", tenant_id="acme", model="ok")
    poison = LLMCall(run_id="run-2", parent_run_id=None, trace_id="trace-2", model="poison")
    sql.export([make_score("run-1", "helpful", True), run, poison])
    assert sql.rejected_rows == 1
    assert count(sql.engine, "scores", "matched AND tenant_id = 'acme' AND trace_id = 'trace-1'") == 1
