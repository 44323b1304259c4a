"""The SQL store through SQLAlchemy (SQLite by default): events as rows, written in batches.

Inserts are idempotent (``ON CONFLICT (run_id) DO NOTHING``), so a retried batch never counts a call
twice. A batch that the database rejects for its *data* is retried row by row, so one bad row is
logged, counted as dropped and skipped without losing the rest; a connection failure fails the batch
for the pipeline to retry. The store is opened (and migrated) on the sink's worker, never when the
sink is built: a missing folder, a read-only file or a newer schema is reported in ``stats()`` and
the log, and the application runs on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from vital_callbacks.core.events import Event
from vital_callbacks.core.settings import Settings
from vital_callbacks.sinks.base import DropReason, ExportResult, Sink
from vital_callbacks.sinks.sql.rejects import log_rejected, log_unbuildable
from vital_callbacks.store import migrate
from vital_callbacks.store.engine import check_url, is_memory, make_engine, mask_url, normalize_url
from vital_callbacks.store.rows import RowMapping, records_by_kind, rows_by_kind
from vital_callbacks.store.schema import TABLES
from vital_callbacks.store.scores import resolve as resolve_scores
from vital_callbacks.store.scores import scores_last

logger = logging.getLogger("vital_callbacks")

_MAX_ROWS_PER_INSERT = 256
_MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
"""SQLite's default limit on a statement's parameters (``SQLITE_MAX_VARIABLE_NUMBER``: 32,766 since
3.32, 999 before; Python's ``sqlite3`` may be linked to an older system library)."""


def _variable_limit(engine: Engine) -> int:
    """The store's own limit on a statement's parameters, where the driver tells (``sqlite3`` of
    Python 3.11 and later); else the default of its library's version."""
    try:
        with engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            return int(driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    except Exception:
        return _MAX_VARIABLES


_ROW_ERRORS = (DBAPIError, SQLAlchemyError, ValueError, TypeError, OverflowError)


def _insert(engine: Engine, table: Table) -> Any:
    key = [column.name for column in table.primary_key.columns]
    name = engine.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    return insert(table)


def _journal_key(url: str) -> str | None:
    """The store's identity for its journal folder: a SQLite file by its absolute path (a relative URL
    names another file in another working directory), other URLs masked; none for an in-memory store."""
    if is_memory(url):
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return f"sqlite:///{os.path.abspath(parsed.database)}"
    return mask_url(url)


class SQLSink(Sink):
    """Rows in SQLite (default) or another SQLAlchemy database; ``postgresql://`` URLs get
    :class:`~vital_callbacks.sinks.sql.postgres.PostgresSink` from :meth:`from_settings`."""

    name = "sql"
    can_run_in_child_process = True

    def __init__(self, url: str = "sqlite:///vital_callbacks.db", *, auto_migrate: bool = True) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.journal_key = _journal_key(url)
        self.can_run_in_child_process = not is_memory(url)  # another process could not see an in-memory store
        self._auto_migrate = auto_migrate
        self._engine: Engine | None = None
        self._statements: dict[str, Any] = {}
        self._mappings: dict[str, RowMapping] = {}
        self._driver_sql: dict[str, str] = {}
        """Per kind (SQLite): the start of its INSERT, the placeholders of one row, and how many rows
        one statement may take; the statements by kind and row count."""
        self._row_marks: dict[str, str] = {}
        self._rows_per_insert: dict[str, int] = {}
        self._inserts: dict[tuple[str, int], str] = {}
        self._problem: str | None = None
        self.rejected_rows = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        check_url(settings.database_url)
        url = normalize_url(settings.database_url)
        if url.startswith("postgresql+asyncpg"):
            from vital_callbacks.sinks.sql.postgres import PostgresSink

            return PostgresSink.from_settings(settings)
        return cls(url, auto_migrate=settings.auto_migrate())

    @property
    def engine(self) -> Engine:
        """The engine (made on first use; making one does not connect)."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    # -- opening the store, on the worker ---------------------------------------------------------
    def prepare(self) -> None:
        self._open()

    def _open(self) -> bool:
        """Make the engine, migrate, build the statements; False (reported once) when the store is
        not usable yet. Called again before each export until it succeeds."""
        if self._statements:
            return True
        try:
            engine = self.engine
            if self._auto_migrate:
                with migrate.first_start_lock(self.url):
                    migrate.upgrade(engine)
            else:
                migrate.check_not_newer(engine)
            self._build_statements(engine)
        except Exception as exc:
            self._report(migrate.describe_problem(exc, self.masked_url))
            return False
        self._report(None)
        return True

    def _build_statements(self, engine: Engine) -> None:
        statements = {kind: _insert(engine, table) for kind, table in TABLES.items()}
        # SQLite: tuples straight to sqlite3, skipping SQLAlchemy's per-row dict handling (the mapping
        # applies the same bind processors SQLAlchemy would), many rows per INSERT (see _insert_rows).
        # Scores stay dicts: they are matched to their runs first.
        dialect = engine.dialect if engine.dialect.name == "sqlite" else None
        most = _variable_limit(engine) if dialect is not None else _MAX_VARIABLES
        for kind, table in TABLES.items():
            self._mappings[kind] = RowMapping(kind, dialect)
            if dialect is not None and kind != "score":
                columns = self._mappings[kind].columns
                self._driver_sql[kind] = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
                self._row_marks[kind] = f"({', '.join('?' * len(columns))})"
                self._rows_per_insert[kind] = max(1, min(_MAX_ROWS_PER_INSERT, most // len(columns)))
        self._statements = statements

    def _report(self, problem: str | None) -> None:
        if problem != self._problem:
            if problem is not None:
                logger.error("vital-callbacks: %s; events for it are retried, then spilled or counted as dropped",
                             problem)
            elif self._problem is not None:
                logger.info("vital-callbacks: the SQL store at %s is usable again", self.masked_url)
            self._problem = problem
        self.context.problem(problem)

    # -- writing ----------------------------------------------------------------------------------
    def export(self, batch: Sequence[Event]) -> ExportResult:
        if not self._open():
            return ExportResult.FAILURE
        if self._driver_sql:
            grouped = records_by_kind(batch, self._mappings.__getitem__, self._unbuildable)
        else:
            grouped = rows_by_kind(batch, self._unbuildable)
        try:
            with self.engine.begin() as conn:
                for kind, rows in scores_last(grouped):
                    self._execute(conn, kind, rows)
            if self._problem is not None:
                self._report(None)  # a passing problem (a locked or restarted store) is over
            return ExportResult.SUCCESS
        except OperationalError as exc:
            self._report(migrate.describe_problem(exc, self.masked_url))
            return ExportResult.FAILURE
        except _ROW_ERRORS:
            # A value the driver cannot bind (an int over 2**63 in SQLite) fails the same way as a row
            # the database rejects: find it, skip it, keep the rest.
            return self._row_by_row(grouped)

    def _unbuildable(self, event: Event, exc: Exception) -> None:
        self._rejected(1)
        log_unbuildable(event, exc)

    def _execute(self, conn: Connection, kind: str, rows: list[Any]) -> None:
        if kind in self._driver_sql:
            self._insert_rows(conn, kind, rows)
            return
        if kind == "score":
            resolve_scores(conn, rows)
        conn.execute(self._statements[kind], rows)

    def _insert_rows(self, conn: Connection, kind: str, rows: list[Any]) -> None:
        """Rows as few multi-row INSERTs, in pieces of a power of two rows (so a handful of statements,
        each prepared once and cached by sqlite3, serve every batch size). Not ``executemany``: sqlite3
        lets go of the GIL around every row's step and must take it back each time, which, beside an
        application thread that is busy, waits up to a switch interval per row; one statement lets go
        once per piece."""
        most = self._rows_per_insert[kind]
        start = 0
        while start < len(rows):
            size = min(most, 1 << (len(rows) - start).bit_length() - 1)
            statement = self._inserts.get((kind, size))
            if statement is None:
                statement = self._inserts[(kind, size)] = (
                    self._driver_sql[kind] + ", ".join([self._row_marks[kind]] * size) + " ON CONFLICT DO NOTHING")
            conn.exec_driver_sql(statement, tuple(chain.from_iterable(rows[start:start + size])))
            start += size

    def _row_by_row(self, grouped: dict[str, list[Any]]) -> ExportResult:
        """Isolate the rows the database rejects so they cannot sink the rest of their batch."""
        for kind, rows in scores_last(grouped):
            for row in rows:
                try:
                    with self.engine.begin() as conn:
                        self._execute(conn, kind, [row])
                except OperationalError:
                    return ExportResult.FAILURE
                except _ROW_ERRORS as exc:
                    self._rejected(1)
                    run_id = row.get("run_id") if isinstance(row, dict) else row[self._mappings[kind].id_position]
                    log_rejected("the database", kind, run_id, exc)
        return ExportResult.SUCCESS

    def _rejected(self, count: int) -> None:
        self.rejected_rows += count
        self.context.dropped(count, DropReason.REJECTED)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def after_fork(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)  # the parent's connections stay the parent's
