"""The SQL store: events as rows of five SQLModel tables, written in batches on the sink's worker.

Inserts are idempotent (``ON CONFLICT (run_id) DO NOTHING``), so a retried batch never counts a call
twice. A batch that the database rejects for its *data* is retried row by row, so one bad row is
logged and skipped without losing the rest; a connection failure fails the batch for the pipeline to
retry. Text is made storable first: NUL bytes and lone surrogates removed, over-long names truncated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlmodel import SQLModel, create_engine

from vital_callbacks import tables
from vital_callbacks.events import Event, GraphRun, LLMCall, Score
from vital_callbacks.scores import resolve as resolve_scores
from vital_callbacks.scores import score_row, scores_last
from vital_callbacks.settings import Settings
from vital_callbacks.sinks.base import ExportResult, Sink

logger = logging.getLogger("vital_callbacks")

_SKIP = {"start_time", "end_time", "usage", "cost", "raw_input", "raw_output", "tags"}
MAX_TEXT = 1_000_000


def clean_text(value: str, limit: int | None = None) -> str:
    """Storable text: no NUL (PostgreSQL rejects it), no lone surrogates (not UTF-8), bounded."""
    if value.isascii() and "\x00" not in value and (limit is None or len(value) <= limit):
        return value  # the common case, decided in C
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def _limits(row_type: type[SQLModel]) -> dict[str, int]:
    """Longest text each column takes (``MAX_TEXT`` for unbounded text)."""
    out: dict[str, int] = {}
    for column in row_type.__table__.columns:  # type: ignore[attr-defined]
        length = getattr(column.type, "length", None)
        out[column.name] = length if isinstance(length, int) else MAX_TEXT
    return out


_LIMITS = {kind: _limits(row_type) for kind, row_type in tables.ROW_TYPES.items()}
_COLUMNS_OF: dict[type, tuple[str, ...]] = {}


def _plain_fields(cls: type) -> tuple[str, ...]:
    """The event fields that are columns as they are (cached: ``fields()`` is slow per row)."""
    names = _COLUMNS_OF.get(cls)
    if names is None:
        names = _COLUMNS_OF[cls] = tuple(f.name for f in fields(cls) if f.name not in _SKIP)
    return names


def to_row(event: Event) -> dict[str, Any]:
    """The column values of an event's row."""
    if isinstance(event, Score):
        row = score_row(event)
    else:
        row = {name: getattr(event, name) for name in _plain_fields(type(event))}
        row["started_at"] = event.started_at
        row["ended_at"] = event.ended_at
        row["tags"] = json.dumps(list(event.tags)) if event.tags else None
    if isinstance(event, (GraphRun, LLMCall)):
        row.update(event.usage.columns())
        del row["cache_write_1h_tokens"]  # part of cache_write_tokens; no column of its own
    if isinstance(event, LLMCall):
        cost = event.cost
        row["input_cost"] = cost.input if cost else None
        row["output_cost"] = cost.output if cost else None
        row["total_cost"] = cost.total if cost else None
        row["price_source"] = cost.source if cost else None
    limits = _LIMITS[event.kind]
    for key, value in row.items():
        # Tested inline first: most values are short ASCII and need nothing (this runs for every column).
        if value.__class__ is str and (len(value) > limits.get(key, MAX_TEXT) or not value.isascii()
                                       or "\x00" in value):
            row[key] = storable_text(value, limits.get(key, MAX_TEXT), event.kind, key)
    return row


def storable_text(value: str, limit: int, kind: str, column: str) -> str:
    """:func:`clean_text`, with a warning when the value had to be cut to fit its column."""
    cleaned = clean_text(value, limit)
    if len(value) > limit and len(cleaned) < len(value):
        logger.warning("vital-callbacks: %s.%s truncated from %d to %d characters", kind, column, len(value), limit)
    return cleaned


def normalize_url(url: str) -> str:
    """``postgresql://`` means asyncpg, the driver we support for PostgreSQL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> Engine:
    """A synchronous engine; SQLite in WAL mode so readers never block the writer."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_schema(engine: Engine) -> None:
    from vital_callbacks import db  # imported here because db imports this module

    db.upgrade(engine)


def _insert(engine: Engine, row_type: type[SQLModel]) -> Any:
    table = row_type.__table__  # type: ignore[attr-defined]
    key = [column.name for column in table.primary_key.columns]
    name = engine.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    return insert(table)


class SQLSink(Sink):
    """Rows in SQLite (default) or any SQLAlchemy database."""

    name = "sql"

    def __init__(self, url: str = "sqlite:///vital_callbacks.db", *, auto_migrate: bool = True) -> None:
        from vital_callbacks.sinks._records import RecordBuilder  # imported here: it builds on this module

        self.url = url
        self.engine = make_engine(url)
        self.rejected_rows = 0
        if auto_migrate:
            create_schema(self.engine)
        self._statements = {kind: _insert(self.engine, rt) for kind, rt in tables.ROW_TYPES.items()}
        # SQLite: tuples straight to sqlite3's executemany, skipping SQLAlchemy's per-row dict handling
        # (the builders apply the same bind processors SQLAlchemy would). Scores stay dicts: they are
        # matched to their runs first.
        self._builders: dict[str, RecordBuilder] = {}
        self._driver_sql: dict[str, str] = {}
        if self.engine.dialect.name == "sqlite":
            for kind, row_type in tables.ROW_TYPES.items():
                if kind == "score":
                    continue
                builder = self._builders[kind] = RecordBuilder(kind, self.engine.dialect)
                self._driver_sql[kind] = (
                    f"INSERT INTO {row_type.__tablename__} ({', '.join(builder.columns)}) "
                    f"VALUES ({', '.join('?' * len(builder.columns))}) ON CONFLICT DO NOTHING")

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        url = normalize_url(settings.database_url)
        if url.startswith("postgresql+asyncpg"):
            from vital_callbacks.sinks.postgres import PostgresSink

            return PostgresSink.from_settings(settings)
        return cls(url, auto_migrate=settings.auto_migrate())

    def export(self, batch: Sequence[Event]) -> ExportResult:
        grouped: dict[str, list[Any]] = {}
        builders = self._builders
        for event in batch:
            try:
                builder = builders.get(event.kind)
                grouped.setdefault(event.kind, []).append(builder.record(event) if builder else to_row(event))
            except Exception:
                self.rejected_rows += 1
                logger.exception("vital-callbacks: could not turn %s %s into a row; skipped", event.kind, event.run_id)
        try:
            with self.engine.begin() as conn:
                for kind, rows in scores_last(grouped):
                    self._execute(conn, kind, rows)
            return ExportResult.SUCCESS
        except OperationalError:
            logger.warning("vital-callbacks: SQL store unavailable; batch of %d will be retried", len(batch),
                           exc_info=True)
            return ExportResult.FAILURE
        except (DBAPIError, SQLAlchemyError, ValueError, TypeError, OverflowError):
            # A value the driver cannot bind (an int over 2**63 in SQLite) fails the same way as a row
            # the database rejects: find it, skip it, keep the rest.
            return self._row_by_row(grouped)

    def _execute(self, conn: Connection, kind: str, rows: list[Any]) -> None:
        if kind in self._driver_sql:
            conn.exec_driver_sql(self._driver_sql[kind], rows)
            return
        if kind == "score":
            resolve_scores(conn, rows)
        conn.execute(self._statements[kind], rows)

    def _row_by_row(self, grouped: dict[str, list[Any]]) -> ExportResult:
        """Isolate the rows the database rejects so they cannot sink the rest of their batch."""
        for kind, rows in scores_last(grouped):
            for row in rows:
                try:
                    with self.engine.begin() as conn:
                        self._execute(conn, kind, [row])
                except OperationalError:
                    return ExportResult.FAILURE
                except (DBAPIError, SQLAlchemyError, ValueError, TypeError, OverflowError) as exc:
                    self.rejected_rows += 1
                    run_id = row.get("run_id") if isinstance(row, dict) else row[self._builders[kind].id_position]
                    logger.error("vital-callbacks: %s row %s rejected by the database: %s",
                                 kind, run_id, exc.__class__.__name__)
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        self.engine.dispose()
