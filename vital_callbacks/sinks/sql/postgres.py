"""The PostgreSQL store: the SQL sink's tables, written with asyncpg on the sink's worker thread.

The sink owns a private event loop and drives it only from the pipeline's worker thread, so it never
touches the caller's thread or the caller's event loop. Each table's rows of a batch go first as one
binary ``COPY`` straight into the table: fresh run ids, the normal case, cost two round trips and one
write per row. A ``COPY`` is all or nothing, so when it fails on a run id already stored (a retry or a
replay) or on a bad value, the same rows go the careful way, in one transaction: ``COPY`` into a
session-local temporary table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, so nothing is
ever counted twice; and if the database still rejects them for their data, they are inserted one by
one and only the bad ones are dropped (counted and logged by run id, never by value).

When the database is unreachable the export fails fast (reconnects back off up to 5 s), the pipeline
retries and then calls :meth:`PostgresSink.spill`; spilled rows are replayed, oldest first, after the
next successful export, on every flush, and by the next process to start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy.engine import make_url

from vital_callbacks.core.events import Event
from vital_callbacks.core.settings import Settings
from vital_callbacks.core.turns import taking_turns
from vital_callbacks.sinks.base import DropReason, ExportResult, Sink
from vital_callbacks.sinks.sql.rejects import log_rejected, log_unbuildable
from vital_callbacks.sinks.sql.spill import Rows, SpillDir, default_spill_dir
from vital_callbacks.store import scores
from vital_callbacks.store.engine import mask_url, normalize_url
from vital_callbacks.store.migrate import describe_problem, upgrade_async
from vital_callbacks.store.rows import RowMapping, records_by_kind
from vital_callbacks.store.schema import EVENT_TABLES, TABLES

logger = logging.getLogger("vital_callbacks")

_T = TypeVar("_T")
_MIN_BACKOFF_S = 0.25
_MAX_BACKOFF_S = 5.0
_CAREFUL_ROWS = 512
"""Rows per transaction on the careful path (temporary table, then row by row if that fails)."""
_DEADLINE_POLL_S = 0.1
_CANCEL_GRACE_S = 0.2
"""How often a wait on the server looks at the shutdown deadline."""
_REPLAY_BUDGET_S = 1.0
"""Replay after a live export stops after this long, so spilled rows never starve live ones."""

_DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,  # class 22: bad values (server side)
    asyncpg.exceptions.IntegrityConstraintViolationError,  # class 23
    asyncpg.exceptions.ProgramLimitExceededError,  # e.g. an index row too large
    ValueError,  # includes asyncpg's client-side DataError (a value its codec cannot encode)
    TypeError,
    OverflowError,
)
"""Errors caused by a row's contents: isolate the row. Anything else is the database's state
(down, restarting, timed out, schema missing) and fails the batch for the pipeline to retry."""


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a left-behind task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class _Statements:
    """The SQL and the record builder of one event table, built once."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.table = TABLES[kind].name
        self.builder = RowMapping(kind)
        self.columns = self.builder.columns
        self.temp = f"vital_tmp_{self.table}"
        cols = ", ".join(f'"{c}"' for c in self.columns)
        self.create_temp = (f"CREATE TEMP TABLE IF NOT EXISTS {self.temp} (LIKE {self.table} INCLUDING DEFAULTS) "
                            "ON COMMIT DELETE ROWS")
        self.insert_select = f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM {self.temp} ON CONFLICT DO NOTHING"
        params = ", ".join(f"${i}" for i in range(1, len(self.columns) + 1))
        self.insert_one = f"INSERT INTO {self.table} ({cols}) VALUES ({params}) ON CONFLICT DO NOTHING"


_STATEMENTS = {kind: _Statements(kind) for kind in TABLES}

Batch = dict[str, list[Any]]
"""Per table: records (tuples in column order), except scores, which stay row dicts until they are
matched to their runs inside the write's transaction."""


async def _reset(conn: asyncpg.Connection) -> None:
    """Between uses, only end a transaction left open (a timeout mid-write). The pool's default reset
    (``RESET ALL``, ``UNLISTEN *``, ...) is a round trip per batch for session state we never set."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresSink(Sink):
    """Rows in PostgreSQL (or TimescaleDB) through asyncpg; selected by a ``postgresql://`` URL."""

    name = "sql"
    can_run_in_child_process = True
    coalesce = 8
    """Behind, one export is up to 8 batches in one ``COPY`` per table (see ``Sink.coalesce``): each
    round trip costs the worker a wait for the GIL, so fewer, larger ones catch up faster (the figures
    behind 8 are in ``benchmarks/RESULTS.md``)."""

    def __init__(self, url: str, *, spill_dir: Path | None = None, auto_migrate: bool = False, pool_size: int = 2,
                 statement_timeout_s: float = 30.0, connect_timeout_s: float = 10.0) -> None:
        self.url = normalize_url(url)
        if not self.url.startswith("postgresql+asyncpg://"):
            raise ValueError(f"PostgresSink needs a postgresql:// URL, got {mask_url(self.url)}")
        self.masked_url = mask_url(self.url)
        self.journal_key = self.masked_url
        self.shown_url = mask_url(url)
        """The URL as the user wrote it (``VITAL_DATABASE_URL``), password masked: what problems name."""
        self._password = make_url(self.url).password
        self._dsn = "postgresql://" + self.url[len("postgresql+asyncpg://"):]
        self.spill_dir = SpillDir(spill_dir or default_spill_dir(self.masked_url))
        self._auto_migrate = auto_migrate
        self._pool_size = pool_size
        self._statement_timeout_s = statement_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._loop = asyncio.new_event_loop()
        self._pool: asyncpg.Pool | None = None
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._closed = False
        self._counter_lock = threading.Lock()  # spill() also runs on the pipeline's dispatcher thread
        self.rejected_rows = 0
        """Rows the database refused for their contents; logged by run id and dropped."""
        self.spilled_rows = 0
        self.replayed_rows = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        return cls(settings.database_url, spill_dir=settings.spill_dir, auto_migrate=settings.auto_migrate(),
                   pool_size=settings.database_pool_size,
                   statement_timeout_s=settings.database_statement_timeout_s,
                   connect_timeout_s=settings.database_connect_timeout_s)

    # -- the Sink interface (all called on the pipeline's worker thread, except spill) ----------------
    def prepare(self) -> None:
        """Open the pool and let asyncpg learn the tables' column types (an empty ``COPY`` per table):
        a cost that would otherwise fall on the first batch. The database being down is not an error
        here; ``export`` reconnects with backoff."""
        if self._closed or not self._migrated():
            return
        try:
            self._run(self._prepare_async(), timeout=self._connect_timeout_s + 5.0)
        except Exception as exc:
            self._unavailable(exc)

    async def _prepare_async(self) -> None:
        pool = await self._pool_or_connect()
        async with pool.acquire() as conn:
            for statements in _STATEMENTS.values():
                await conn.copy_records_to_table(statements.table, records=[], columns=statements.columns)

    def export(self, batch: Sequence[Event]) -> ExportResult:
        if not self._write(self._records(batch)):
            return ExportResult.FAILURE
        if self.spill_dir.may_have_pending():
            self._replay(time.monotonic() + _REPLAY_BUDGET_S)
        return ExportResult.SUCCESS

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Replay every spilled row; False while rows still wait in the spill folder.

        Inside a reconnect backoff window the first replay does not even try, so the flush waits for
        the window to end (when that is within ``timeout_s``) and makes one real attempt: a flush
        right after the database comes back then delivers, and one while it is down stays bounded."""
        if not self.spill_dir.may_have_pending(recheck_s=0.0):
            return True
        deadline = time.monotonic() + timeout_s
        in_backoff = time.monotonic() < self._retry_at
        if self._replay(deadline):
            return True
        wait_s = self._retry_at - time.monotonic()
        if in_backoff and 0 < wait_s < deadline - time.monotonic():
            time.sleep(wait_s)
            return self._replay(deadline)
        return False

    def spill(self, batch: Sequence[Event]) -> int:
        """Save undeliverable events to the spill folder; called by the pipeline from either of its
        threads (after the last retry, or when this sink's queue is full)."""
        saved = self.spill_dir.write(self._rows(batch))
        with self._counter_lock:
            self.spilled_rows += saved
        return saved

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        pool = self._pool
        if pool is not None:
            try:
                self._run(pool.close(), timeout=max(0.1, min(5.0, timeout_s)), until_deadline=False)
            except Exception:
                pool.terminate()
        self._loop.close()
        waiting = self.spill_dir.pending_rows()
        if waiting:
            logger.warning("vital-callbacks: %d rows for %s wait in %s; the next process that writes to "
                           "this database replays them", waiting, self.masked_url, self.spill_dir.directory)

    def after_fork(self) -> None:
        """A forked child gets its own loop and pool; the parent's connections are left alone."""
        self._loop = asyncio.new_event_loop()
        self._pool = None
        self._counter_lock = threading.Lock()

    def _rejected(self, count: int) -> None:
        with self._counter_lock:
            self.rejected_rows += count
        self.context.dropped(count, DropReason.REJECTED)

    # -- rows -------------------------------------------------------------------------------------
    def _records(self, batch: Sequence[Event]) -> Batch:
        return records_by_kind(batch, lambda kind: _STATEMENTS[kind].builder, self._reject_unbuildable)

    def _rows(self, batch: Sequence[Event]) -> Rows:
        """Row dicts, for spill files (column names keep them readable across schema changes)."""
        grouped: Rows = {}
        for event in taking_turns(batch):
            try:
                grouped.setdefault(event.kind, []).append(_STATEMENTS[event.kind].builder.row(event))
            except Exception as exc:
                self._reject_unbuildable(event, exc)
        return grouped

    def _reject_unbuildable(self, event: Event, exc: Exception) -> None:
        self._rejected(1)
        log_unbuildable(event, exc)

    @staticmethod
    def _from_rows(rows: Rows) -> Batch:
        return {kind: kind_rows if kind == "score" else [_STATEMENTS[kind].builder.from_row(r) for r in kind_rows]
                for kind, kind_rows in rows.items() if kind in _STATEMENTS}

    def _replay(self, deadline: float) -> bool:
        def damaged(count: int) -> None:
            self.context.recovered(0, count, DropReason.DAMAGED_SPILL)

        replayed, done = self.spill_dir.replay(lambda rows: self._write(self._from_rows(rows)), deadline, damaged)
        self.replayed_rows += replayed
        self.context.recovered(replayed, 0, DropReason.DAMAGED_SPILL)
        if replayed:
            logger.info("vital-callbacks: replayed %d spilled rows into %s", replayed, self.masked_url)
        return done

    # -- the private event loop ----------------------------------------------------------------------
    def _run(self, awaitable: Awaitable[_T], timeout: float, *, until_deadline: bool = True) -> _T:
        return self._loop.run_until_complete(self._bounded(awaitable, timeout, until_deadline))

    async def _bounded(self, awaitable: Awaitable[_T], timeout: float, until_deadline: bool) -> _T:
        """``awaitable`` within ``timeout``, and never past the pipeline's deadline while it shuts down
        (a hung server would otherwise hold the export, and the exit, for connect + 2 statement
        timeouts): the deadline is looked at again every fraction of a second. Closing or expiring the
        pool is bounded by its own short timeout only (``until_deadline=False``)."""
        task = asyncio.ensure_future(awaitable)
        end = time.monotonic() + timeout
        while True:
            deadline = self.context.deadline() if until_deadline else None
            wait = (end if deadline is None else min(end, deadline)) - time.monotonic()
            if wait <= 0:
                # Cancelled, the driver may still wait on the server to release its connection (a
                # cancel request a hung server never answers): give it a moment, then leave it.
                task.cancel()
                await asyncio.wait({task}, timeout=_CANCEL_GRACE_S)
                if not task.done():
                    task.add_done_callback(_consume)
                    if self._pool is not None:
                        self._pool.terminate()
                        self._pool = None
                raise TimeoutError("the PostgreSQL store did not answer before the deadline")
            done, _ = await asyncio.wait({task}, timeout=min(wait, _DEADLINE_POLL_S))
            if done:
                return task.result()

    def _write(self, rows: Batch) -> bool:
        """Insert rows; False when the database is unavailable (the caller retries or spills)."""
        if not rows:
            return True
        if self._closed or time.monotonic() < self._retry_at or not self._migrated():
            return False
        try:
            self._run(self._write_async(rows), timeout=self._connect_timeout_s + 2 * self._statement_timeout_s)
        except Exception as exc:
            self._unavailable(exc)
            return False
        if self._backoff_s:
            logger.info("vital-callbacks: PostgreSQL store at %s is reachable again", self.masked_url)
            self._backoff_s = 0.0
            self.context.problem(None)
        return True

    def _migrated(self) -> bool:
        """With auto-migrate on, upgrade the schema once before anything else. Not under the write's
        timeout: a first upgrade of a large table (0004 sums every call) may take minutes, and
        cancelling it would roll it back only to start again with the next batch."""
        if not self._auto_migrate:
            return True
        try:
            self._loop.run_until_complete(upgrade_async(self.url, connect_timeout_s=self._connect_timeout_s))
        except Exception as exc:
            self._unavailable(exc)
            return False
        self._auto_migrate = False
        return True

    def _unavailable(self, exc: BaseException) -> None:
        self.context.problem(self._scrub(describe_problem(exc, self.shown_url)))
        first = self._backoff_s == 0.0
        self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S) if self._backoff_s else _MIN_BACKOFF_S
        self._retry_at = time.monotonic() + self._backoff_s
        if self._pool is not None:  # connections may be dead (server restart): replace them on next use
            try:
                self._run(self._pool.expire_connections(), timeout=1.0, until_deadline=False)
            except Exception:
                logger.debug("vital-callbacks: expiring pooled connections failed", exc_info=True)
        if isinstance(exc, asyncpg.exceptions.UndefinedTableError):
            logger.error("vital-callbacks: the store's tables are missing in %s; run `vital-callbacks db upgrade` "
                         "or set VITAL_DATABASE_AUTO_MIGRATE=1", self.masked_url)
        elif first:
            logger.warning("vital-callbacks: PostgreSQL store at %s unavailable (%s: %s); reconnecting with "
                           "backoff, undeliverable rows spill to %s", self.masked_url, type(exc).__name__,
                           self._scrub(str(exc)), self.spill_dir.directory)

    def _scrub(self, message: str) -> str:
        """Driver messages may echo the DSN (a malformed one, say); never let the password through."""
        return message.replace(self._password, "***") if self._password else message

    async def _pool_or_connect(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=self._connect_timeout_s,
                command_timeout=self._statement_timeout_s + 5.0, init=self._init_connection, reset=_reset,
                server_settings={"statement_timeout": str(int(self._statement_timeout_s * 1000)),
                                 "application_name": "vital-callbacks"},
            )
        return self._pool

    @staticmethod
    async def _init_connection(conn: asyncpg.Connection) -> None:  # the temporary tables, once per session
        for statements in _STATEMENTS.values():
            await conn.execute(statements.create_temp)

    async def _write_async(self, rows: Batch) -> None:
        pool = await self._pool_or_connect()
        async with pool.acquire() as conn:
            for kind, items in scores.scores_last(rows):
                if kind != "score":
                    try:
                        # Fresh run ids, the normal case: one COPY straight into the table, atomic on its
                        # own (two round trips, no temporary table for the server to write and read).
                        statements = _STATEMENTS[kind]
                        await conn.copy_records_to_table(statements.table, records=items, columns=statements.columns)
                        continue
                    except _DATA_ERRORS:
                        pass  # a retry or replay (some ids stored already), or a bad row: the careful path
                # In slices, so one bad row in a coalesced export sends only its own slice row by row.
                for start in range(0, len(items), _CAREFUL_ROWS):
                    await self._write_idempotent(conn, kind, items[start:start + _CAREFUL_ROWS])

    async def _write_idempotent(self, conn: PoolConnectionProxy[Record], kind: str, items: list[Any]) -> None:
        """COPY into the session's temporary table, then ``INSERT ... ON CONFLICT DO NOTHING``, in one
        transaction; rows the database rejects are then isolated one by one."""
        statements = _STATEMENTS[kind]
        try:
            async with conn.transaction():
                records = await self._score_records(conn, items) if kind == "score" else items
                await conn.copy_records_to_table(statements.temp, records=records, columns=statements.columns)
                await conn.execute(statements.insert_select)
        except _DATA_ERRORS:
            await self._row_by_row(conn, kind, items)

    async def _row_by_row(self, conn: PoolConnectionProxy[Record], kind: str, items: list[Any]) -> None:
        """Isolate the rows the database rejects, so they cannot sink the rest of their batch."""
        statements = _STATEMENTS[kind]
        records = await self._score_records(conn, items) if kind == "score" else items
        for record in records:
            try:
                await conn.execute(statements.insert_one, *record)
            except _DATA_ERRORS as exc:
                self._rejected(1)
                log_rejected("PostgreSQL", kind, record[statements.builder.id_position], exc)

    async def _score_records(self, conn: PoolConnectionProxy[Record], rows: list[dict[str, Any]]) -> list[Any]:
        await self._resolve_scores(conn, rows)
        builder = _STATEMENTS["score"].builder
        return [builder.from_row(row) for row in rows]

    @staticmethod
    async def _resolve_scores(conn: PoolConnectionProxy[Record], rows: list[dict[str, Any]]) -> None:
        """Attach unmatched scores to the stored run (or trace root) their target id names."""
        wanted = scores.unmatched_targets(rows)
        found: dict[str, Record] = {}
        columns = ", ".join(("run_id", *scores.COPIED))
        for table in EVENT_TABLES.values():
            if not wanted:
                break
            sql = f"SELECT {columns} FROM {table.name} WHERE run_id = ANY($1::text[])"
            for record in await conn.fetch(sql, list(wanted)):
                found[record["run_id"]] = record
                wanted.discard(record["run_id"])
        scores.attach(rows, found)
