"""The compiled record builders give exactly the tuples the generic ``to_row`` path gives."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from tests.graphs import INPUT, build_graph
from vital_callbacks import Cost, InMemorySink, LLMCall, Settings, TokenUsage, VitalCallbackHandler, tables
from vital_callbacks.events import Event
from vital_callbacks.sinks._records import RecordBuilder, check, columns
from vital_callbacks.sinks.sql import to_row

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


def generic(kind: str, event: Event, dialect: Any = None) -> tuple[Any, ...]:
    row = to_row(event)
    values = [row.get(c) for c in columns(kind)]
    if dialect is None:
        return tuple(values)
    table = tables.ROW_TYPES[kind].__table__  # type: ignore[attr-defined]
    out = []
    for column, value in zip(table.columns, values, strict=True):
        processor = column.type.dialect_impl(dialect).bind_processor(dialect)
        out.append(processor(value) if processor is not None else value)
    return tuple(out)


@pytest.mark.parametrize("dialect", [None, sqlite.dialect(), postgresql.dialect()], ids=["plain", "sqlite", "pg"])
def test_compiled_records_equal_the_generic_rows_for_every_event_kind(dialect: Any) -> None:
    """Every kind the reference graph emits, plus a call with every odd value (NUL, surrogates, over-long
    names, tags, cache savings): the fast path and ``to_row`` agree column for column."""
    events = reference_events()
    assert {e.kind for e in events} >= {"graph_run", "node_run", "llm_call", "tool_call", "retriever_call"}
    for event in events:
        builder = RecordBuilder(event.kind, dialect)
        assert builder._fast is not None
        assert builder._fast(event) == generic(event.kind, event, dialect), event.kind  # no fallback taken


def test_every_column_has_an_event_value() -> None:
    """An event class and its table cannot drift apart unnoticed."""
    for kind in tables.ROW_TYPES:
        check(kind)


def test_a_value_of_an_unexpected_type_falls_back_to_the_generic_row() -> None:
    """A hand-built event with a non-string model still becomes a row (the generic path copes)."""
    event = LLMCall(run_id="x", parent_run_id=None, trace_id="x", model=42)  # type: ignore[arg-type]
    record = RecordBuilder("llm_call").record(event)
    assert record[columns("llm_call").index("model")] == 42
