"""The one event -> row mapping: every column has an event value, and records, dicts and spill rows agree."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from msgspec.structs import replace
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from tests.graphs import INPUT, build_graph
from vital_callbacks import Cost, InMemorySink, LLMCall, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.core.events import Event
from vital_callbacks.store.rows import MAX_TEXT, RowMapping, mapping, records_by_kind, to_row
from vital_callbacks.store.schema import TABLES

ODD = LLMCall(run_id="odd", parent_run_id=None, trace_id="odd", tenant_id="t" * 300, user_id="u\x00ser",
              graph="gr\udcffaph", model="m", provider="p", tags=("a", "b"), start_time=1.7e9, end_time=1.7e9 + 1,
              error_message="x" * 2_000_000, usage=TokenUsage(5, 6, 11, cache_read=2, reasoning=1),
              cost=Cost(Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), "override:x.yml"), cache_hit=True,
              saved_cost=Decimal("0.5"), prompt="p", completion="c")


def reference_events() -> list[Event]:
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(capture_content=True), sinks=[memory])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    handler.flush()
    handler.shutdown()
    return [*memory.events, ODD]


def test_every_column_has_an_event_value() -> None:
    """An event class and its table cannot drift apart unnoticed."""
    for kind in TABLES:
        assert RowMapping(kind).missing == [], kind


def test_an_llm_call_row_holds_its_fields_usage_cost_and_cleaned_text() -> None:
    """Usage and cost columns come from the nested values; text is made storable and cut to its column."""
    row = to_row(ODD)
    tokens = (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["reasoning_tokens"])
    assert tokens == (5, 6, 2, 1)
    assert (row["input_cost"], row["total_cost"], row["price_source"]) == (Decimal("0.1"), Decimal("0.3"),
                                                                            "override:x.yml")
    assert row["tenant_id"] == "t" * 256 and row["user_id"] == "user" and "\udcff" not in row["graph"]
    assert len(row["error_message"]) == MAX_TEXT
    assert json.loads(row["tags"]) == ["a", "b"] and row["started_at"].year == 2023


def test_an_unpriced_call_has_null_costs() -> None:
    """No cost means NULL in every cost column, never 0."""
    row = to_row(LLMCall(run_id="u", parent_run_id=None, trace_id="u"))
    assert row["input_cost"] is row["output_cost"] is row["total_cost"] is row["price_source"] is None


@pytest.mark.parametrize("dialect", [None, sqlite.dialect(), postgresql.dialect()],  # type: ignore[no-untyped-call]
                         ids=["plain", "sqlite", "pg"])
def test_records_equal_the_row_dicts_for_every_event_kind(dialect: Dialect | None) -> None:
    """Every kind the reference graph emits, plus a call with every odd value: the driver's tuple is the
    row dict in column order (through the dialect's bind processors), and a spilled row reads back the same."""
    events = reference_events()
    assert {e.kind for e in events} >= {"graph_run", "node_run", "llm_call", "tool_call", "retriever_call"}
    for event in events:
        rows = RowMapping(event.kind, dialect)
        record = rows.record(event)
        assert len(record) == len(rows.columns)
        assert rows.from_row(mapping(event.kind).row(event)) == record, event.kind


@pytest.mark.parametrize("dialect", [None, sqlite.dialect(), postgresql.dialect()],  # type: ignore[no-untyped-call]
                         ids=["plain", "sqlite", "pg"])
def test_records_built_a_batch_at_a_time_equal_the_row_dicts(dialect: Dialect | None) -> None:
    """A batch's records are built column by column; each equals the event's row dict through the
    dialect's bind processors, with clean and odd values (cut, NUL, surrogate) side by side in a
    column, and an event that cannot be a row is set aside without its batch."""
    events = reference_events()
    clean = replace(ODD, run_id="clean", tenant_id="t", user_id="user", graph="graph", error_message="e")
    long_but_fitting = replace(ODD, run_id="long", tenant_id="t" * 255, error_message="x" * MAX_TEXT)
    events += [clean, long_but_fitting, replace(ODD, run_id="odd-2")]
    for kind in {e.kind for e in events} - {"score"}:
        rows = RowMapping(kind, dialect)
        batch = [e for e in events if e.kind == kind]
        assert rows.records(batch) == [rows.from_row(mapping(kind).row(e)) for e in batch], kind
    rejected: list[str] = []
    broken = replace(clean, run_id="broken", tags=5)
    grouped = records_by_kind([clean, broken, ODD], lambda kind: RowMapping(kind, dialect),
                              lambda event, exc: rejected.append(event.run_id))
    assert rejected == ["broken"] and len(grouped["llm_call"]) == 2


def test_a_score_row_names_its_target_and_the_scored_run() -> None:
    """Score columns that differ from the event's field names (score_id, run_id, created_at) are mapped."""
    from vital_callbacks.core.scores import make_score

    score = make_score("trace-1", "helpful", True, context={"run_id": "run-1", "trace_id": "trace-1"})
    row = to_row(score)
    assert row["score_id"] == score.run_id and row["run_id"] == "run-1" and row["target_id"] == "trace-1"
    assert row["value"] == 1.0 and row["data_type"] == "boolean" and row["created_at"] is not None


def test_sqlite_timestamps_are_what_sqlalchemy_would_store() -> None:
    """The SQLite records format ``started_at`` / ``ended_at`` from the epoch floats in C; the text is
    exactly what SQLAlchemy's own DATETIME bind processor makes of the same UTC datetime."""
    from datetime import datetime, timezone

    from sqlalchemy import DateTime

    from vital_callbacks.store.rows import sqlite_datetime, sqlite_datetimes

    dialect = sqlite.dialect()
    processor = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    stamps = [0.0, 1.0, 0.000001, 0.9999995, 1.7e9, 1_764_000_000.123456, 1_764_000_000.999999,
              951_782_400.5, 4_102_444_799.999999, 253_402_300_799.0, 1_767_225_599.999_999_7]
    stamps += [1.7e9 + i * 0.3183 for i in range(2_000)]
    stamps += [1.7e9 + i / 8 for i in range(64)] + [n + 0.0000005 for n in range(1_700_000_000, 1_700_000_064)]
    for ts in stamps:
        assert sqlite_datetime(ts) == processor(datetime.fromtimestamp(ts, timezone.utc)), ts
    assert sqlite_datetimes(stamps) == [sqlite_datetime(ts) for ts in stamps]
