"""The SQL store on SQLite and PostgreSQL: graph rows, idempotency, bad input, outages and replay."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from tests import pg_cluster
from tests.conftest import require_service
from tests.graphs import INPUT, METADATA, build_graph
from tests.sinks.conftest import Store
from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.core.events import Event
from vital_callbacks.runtime.journal import waiting_events
from vital_callbacks.runtime.registry import sink_class
from vital_callbacks.sinks.base import ExportResult, Sink
from vital_callbacks.sinks.sql.postgres import PostgresSink
from vital_callbacks.sinks.sql.spill import SpillDir
from vital_callbacks.store import migrate as db
from vital_callbacks.store.rows import MAX_TEXT, to_row

TABLES = {"graph_run": "graph_runs", "node_run": "node_runs", "llm_call": "llm_calls", "tool_call": "tool_calls",
          "retriever_call": "retriever_calls"}
ROOT = Path(__file__).resolve().parents[2]


def sql_sink(store: Store, **overrides: Any) -> Sink:
    return sink_class("sql").from_settings(store.settings(**overrides))


def events(n: int) -> list[LLMCall]:
    return [pg_cluster.llm_call(i) for i in range(n)]


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_service(pg_cluster.reachable(), f"no PostgreSQL at {db.mask_url(pg_cluster.SHARED_URL)}")
    with pg_cluster.fresh_database() as url:
        db.upgrade(url)
        yield url


def test_postgresql_urls_select_the_asyncpg_sink(store: Store) -> None:
    """``postgresql://`` URLs build a PostgresSink through the ``sql`` entry point; SQLite keeps SQLSink."""
    sink = sql_sink(store)
    try:
        assert isinstance(sink, PostgresSink) == (store.kind == "postgresql")
    finally:
        sink.shutdown()


def test_reference_graph_rows_equal_the_events(store: Store) -> None:
    """Every event of the reference graph becomes one row whose columns equal ``to_row(event)``."""
    memory = InMemorySink()
    sink = sql_sink(store)
    handler = VitalCallbackHandler(store.settings(), sinks=[memory, sink])
    try:
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        assert handler.flush(30)
    finally:
        handler.shutdown()
    by_kind: dict[str, list[Event]] = {}
    for event in memory.events:
        by_kind.setdefault(event.kind, []).append(event)
    assert set(by_kind) == set(TABLES)
    for kind, kind_events in by_kind.items():
        stored = {row["run_id"]: row for row in store.rows(TABLES[kind])}
        assert len(stored) == len(kind_events)
        for event in kind_events:
            expected = to_row(event)
            row = stored[event.run_id]
            assert {k: row[k] for k in expected} == expected, (kind, event.run_id)
    graph_row = store.rows("graph_runs")[0]
    assert graph_row["tenant_id"] == "acme"
    assert graph_row["cost_usd"] is not None and graph_row["cost_usd"] > 0


def test_exporting_a_batch_twice_stores_it_once(store: Store) -> None:
    """Inserts are idempotent: a retried or replayed batch never counts a call twice."""
    sink = sql_sink(store)
    batch = events(300)
    try:
        assert sink.export(batch) is ExportResult.SUCCESS
        assert sink.export(batch[100:] + events(50)) is ExportResult.SUCCESS
    finally:
        sink.shutdown()
    assert store.count("llm_calls") == 350
    assert store.count("llm_calls", "DISTINCT run_id") == 350


def test_nul_bytes_and_long_strings_are_cleaned_with_a_warning(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """NUL bytes are removed and over-long names / metadata / text are truncated (with a warning), never a crash."""
    long_text = "e" * (MAX_TEXT + 10)
    dirty = replace(pg_cluster.llm_call(0), tenant_id="ac\x00me", user_id="u" * 1000, graph="g\x00raph",
                    node="n" * 300, model="gpt\x00-4o", tags=("a\x00b",), error_message="bo\x00om" + long_text)
    sink = sql_sink(store)
    handler = VitalCallbackHandler(store.settings(), sinks=[sink])
    try:
        with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
            for event in [dirty, *events(20)]:
                handler.pipeline.submit(event)
            assert handler.flush(30)
    finally:
        handler.shutdown()
    rows = {r["run_id"]: r for r in store.rows("llm_calls")}
    assert len(rows) == 21
    row = rows[dirty.run_id]
    assert (row["tenant_id"], row["graph"], row["model"]) == ("acme", "graph", "gpt-4o")
    assert row["user_id"] == "u" * 256 and row["node"] == "n" * 256
    assert len(row["error_message"]) == MAX_TEXT and "\x00" not in row["error_message"]
    assert "truncated" in caplog.text


def test_a_score_is_matched_to_the_run_stored_before_it(store: Store) -> None:
    """A score naming a run id only is stored after that run's row and takes over its trace and tenant."""
    from vital_callbacks.core.scores import make_score

    call = pg_cluster.llm_call(7)
    score = make_score(call.run_id, "quality", 0.75)
    orphan = make_score("no-such-run", "quality", 0.5)
    sink = sql_sink(store)
    try:
        assert sink.export([score, call, orphan]) is ExportResult.SUCCESS
    finally:
        sink.shutdown()
    rows = {r["target_id"]: r for r in store.rows("scores", order_by="score_id")}
    assert rows[call.run_id]["matched"] and rows[call.run_id]["trace_id"] == call.trace_id
    assert rows[call.run_id]["tenant_id"] == "acme" and rows[call.run_id]["value"] == 0.75
    assert not rows["no-such-run"]["matched"]


def test_one_bad_row_does_not_lose_its_batch(store: Store) -> None:
    """A row the database refuses (NULL in a NOT NULL column) is dropped and counted; the other rows land."""
    batch: list[Event] = list(events(10))
    bad = replace(pg_cluster.llm_call(99), token_source=None)
    batch.insert(5, bad)
    sink = sql_sink(store)
    try:
        assert sink.export(batch) is ExportResult.SUCCESS
        assert getattr(sink, "rejected_rows", None) == 1
    finally:
        sink.shutdown()
    ids = {r["run_id"] for r in store.rows("llm_calls")}
    assert len(ids) == 10 and bad.run_id not in ids


def test_out_of_range_values_are_isolated_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Values PostgreSQL cannot hold (int4 overflow client-side, numeric overflow server-side) cost only their row."""
    good = events(20)
    too_big_int = replace(pg_cluster.llm_call(1), max_tokens=2**40)
    too_big_cost = replace(pg_cluster.llm_call(2), saved_cost=Decimal("1e20"))
    sink = PostgresSink(pg_url, spill_dir=tmp_path)
    try:
        assert sink.export([*good[:10], too_big_int, *good[10:], too_big_cost]) is ExportResult.SUCCESS
        assert sink.rejected_rows == 2
    finally:
        sink.shutdown()
    assert pg_cluster.query(pg_url, "SELECT COUNT(*) AS n FROM llm_calls")[0]["n"] == 20


def test_a_bad_row_in_a_coalesced_export_sends_only_its_slice_row_by_row(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export of several batches (``coalesce``) with one bad row: the careful path goes in slices of
    ``_CAREFUL_ROWS``, so only the bad row's slice is inserted row by row, and the rest all land."""
    from vital_callbacks.sinks.sql import postgres

    monkeypatch.setattr(postgres, "_CAREFUL_ROWS", 100)
    slices: list[int] = []
    row_by_row = PostgresSink._row_by_row

    async def counting(self: PostgresSink, conn: object, kind: str, items: list[object]) -> None:
        slices.append(len(items))
        await row_by_row(self, conn, kind, items)  # type: ignore[arg-type]

    monkeypatch.setattr(PostgresSink, "_row_by_row", counting)
    batch: list[Event] = list(events(450))
    bad = replace(pg_cluster.llm_call(9999), token_source=None)
    batch.insert(250, bad)
    sink = PostgresSink(pg_url, spill_dir=tmp_path)
    try:
        assert sink.export(batch) is ExportResult.SUCCESS
        assert sink.rejected_rows == 1
    finally:
        sink.shutdown()
    assert slices == [100]
    assert pg_cluster.query(pg_url, "SELECT COUNT(*) AS n FROM llm_calls")[0]["n"] == 450


def test_auto_migrate_creates_the_schema_on_first_write(tmp_path: Path) -> None:
    """With auto-migrate on, the sink's first export (on its worker, not at construction) creates the schema."""
    require_service(pg_cluster.reachable(), "no PostgreSQL")
    with pg_cluster.fresh_database() as url:
        sink = PostgresSink(url, spill_dir=tmp_path, auto_migrate=True)
        assert db.current(url) is None
        try:
            assert sink.export(events(5)) is ExportResult.SUCCESS
        finally:
            sink.shutdown()
        assert db.current(url) == db.head()


def test_missing_schema_fails_the_batch_and_says_how_to_fix_it(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Without the tables (and auto-migrate off) a batch fails for retry/spill, logging the upgrade command."""
    require_service(pg_cluster.reachable(), "no PostgreSQL")
    with pg_cluster.fresh_database() as url:
        sink = PostgresSink(url, spill_dir=tmp_path)
        try:
            assert sink.export(events(3)) is ExportResult.FAILURE
        finally:
            sink.shutdown()
    assert "vital-callbacks db upgrade" in caplog.text


def test_unreachable_database_fails_fast_spills_and_never_logs_the_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A refused connection fails the export, spill keeps every row, and logs show the URL masked."""
    url = f"postgresql://writer:s3cr3t-pw@127.0.0.1:{pg_cluster.free_port()}/nowhere"
    sink = PostgresSink(url, spill_dir=tmp_path, connect_timeout_s=2)
    batch = events(40)
    try:
        with caplog.at_level(logging.DEBUG, logger="vital_callbacks"):
            assert sink.export(batch) is ExportResult.FAILURE
            assert sink.export(batch) is ExportResult.FAILURE  # inside the backoff window: no new connect
            assert sink.spill(batch) == 40
    finally:
        sink.shutdown()
    assert SpillDir(tmp_path).pending_rows() == 40
    assert "s3cr3t-pw" not in caplog.text
    assert "writer:***@127.0.0.1" in caplog.text


def test_prepare_opens_the_pool_before_the_first_batch(pg_url: str, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The pool is open and the tables' types are known before any event; a database that is down at
    start is only logged (masked), and the first export then fails fast for the pipeline to retry."""
    sink = PostgresSink(pg_url, spill_dir=tmp_path / "up")
    try:
        sink.prepare()
        assert sink._pool is not None
        assert sink.export(events(5)) is ExportResult.SUCCESS
    finally:
        sink.shutdown()
    down = PostgresSink(f"postgresql://w:pw-9x@127.0.0.1:{pg_cluster.free_port()}/db", spill_dir=tmp_path / "down",
                        connect_timeout_s=2)
    try:
        with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
            down.prepare()  # must not raise
        assert down._pool is None and "unavailable" in caplog.text and "pw-9x" not in caplog.text
        assert down.export(events(1)) is ExportResult.FAILURE
    finally:
        down.shutdown()


def test_a_new_sink_replays_what_an_old_one_spilled(pg_url: str, tmp_path: Path) -> None:
    """Spilled rows survive the sink (as they survive a process) and the next sink's flush replays them."""
    first = PostgresSink(pg_url, spill_dir=tmp_path)
    assert first.spill(events(70)) == 70
    first.shutdown()
    second = PostgresSink(pg_url, spill_dir=tmp_path)
    try:
        assert second.force_flush(30)
        assert second.replayed_rows == 70
    finally:
        second.shutdown()
    assert SpillDir(tmp_path).pending() == []
    assert pg_cluster.query(pg_url, "SELECT COUNT(*) AS n FROM llm_calls")[0]["n"] == 70


def test_spilled_rows_are_replayed_after_the_next_successful_export(pg_url: str, tmp_path: Path) -> None:
    """The first export that succeeds also drains the spill folder, so recovery needs no flush."""
    sink = PostgresSink(pg_url, spill_dir=tmp_path)
    try:
        sink.spill(events(30))
        assert sink.export(events(10)) is ExportResult.SUCCESS
    finally:
        sink.shutdown()
    assert pg_cluster.query(pg_url, "SELECT COUNT(*) AS n FROM llm_calls")[0]["n"] == 40


def _pipeline_with_metrics(sink: Sink) -> tuple[VitalCallbackHandler, Any]:
    from prometheus_client import CollectorRegistry

    from vital_callbacks.sinks.prometheus import PrometheusSink

    registry = CollectorRegistry()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink, PrometheusSink(registry=registry)])
    return handler, registry


def test_a_rejected_row_is_counted_with_its_reason_in_stats_and_the_metric(pg_url: str, tmp_path: Path) -> None:
    """The account says what the store refused: stats(), vital_events_dropped_total, and flush() False."""
    handler, registry = _pipeline_with_metrics(PostgresSink(pg_url, spill_dir=tmp_path))
    try:
        for event in [*events(5), replace(pg_cluster.llm_call(7), max_tokens=2**40)]:
            handler.runtime.submit(event)
        assert handler.flush(30) is False
        stats = handler.stats()
        assert stats["dropped_reasons"] == {"sql": {"rejected by the store": 1}}
        assert stats["exported"]["sql"] == 5
        assert registry.get_sample_value("vital_events_dropped_total",
                                         {"sink": "sql", "reason": "rejected by the store"}) == 1
    finally:
        handler.shutdown()


def test_damaged_spill_files_are_counted_moved_aside_and_never_block_replay(pg_url: str, tmp_path: Path) -> None:
    """A file this version cannot read (its 3 rows by its name) is renamed *.unreadable; a file with one
    damaged line loses that row only; an entry that cannot be opened is skipped; the good rows land.
    Every lost row is in stats() and the metric under ``damaged spill file``; the account balances."""
    spill = SpillDir(tmp_path)
    assert spill.write({"llm_call": [to_row(e) for e in events(4)]}) == 4
    (tmp_path / "00000000000000000001-1-000000-3.jsonl").write_text('{"format": "other"}\n{}\n{}\n{}\n')
    [good] = [p for p in spill.pending() if not p.name.startswith("0000000000000000000")]
    lines = good.read_text().splitlines()
    good.write_text("\n".join([*lines[:-1], lines[-1][:25]]) + "\n")  # the last row cut short
    (tmp_path / "00000000000000000002-1-000000-5.jsonl").mkdir()  # cannot be opened as a file
    handler, registry = _pipeline_with_metrics(PostgresSink(pg_url, spill_dir=tmp_path))
    try:
        handler.runtime.submit(pg_cluster.llm_call(1))  # a successful export replays the spill folder
        handler.flush(30)
        stats = handler.stats()
    finally:
        handler.shutdown()
    assert pg_cluster.query(pg_url, "SELECT COUNT(*) AS n FROM llm_calls")[0]["n"] == 1 + 3
    assert stats["dropped_reasons"] == {"sql": {"damaged spill file": 3 + 1}}
    assert stats["recovered"] == {"sql": 3 + 3 + 1}
    assert stats["submitted"] + stats["recovered"]["sql"] == (
        stats["exported"]["sql"] + stats["spilled"].get("sql", 0) + stats["dropped"]["sql"])
    assert registry.get_sample_value("vital_events_dropped_total",
                                     {"sink": "sql", "reason": "damaged spill file"}) == 4
    assert [p.name for p in tmp_path.glob("*.unreadable")] == ["00000000000000000001-1-000000-3.unreadable"]


# -- fault tests on a private cluster ------------------------------------------------------------------
def _count(url: str) -> tuple[int, int]:
    row = pg_cluster.query(url, "SELECT COUNT(*) AS n, COUNT(DISTINCT run_id) AS d FROM llm_calls")[0]
    return int(row["n"]), int(row["d"])


def test_cluster_restart_mid_run_loses_and_duplicates_nothing(cluster: pg_cluster.PrivateCluster,
                                                               tmp_path: Path) -> None:
    """5,000 calls from 8 threads while the server stops and restarts: exactly 5,000 rows after flush(), and
    every submit made while the server was down returned without waiting for it."""
    with pg_cluster.fresh_database(cluster.url) as url:
        db.upgrade(url)
        settings = Settings(database_url=url, sinks=["sql"], spill_dir=tmp_path / "spill", queue_size=2000,
                            batch_size=256, flush_interval_s=0.05, max_retries=2, retry_backoff_s=0.05)
        handler = VitalCallbackHandler(settings)
        sink = handler.pipeline.sinks[0]
        assert isinstance(sink, PostgresSink)
        submitted = itertools.count(1)
        seen = [0]

        def submit(event: LLMCall) -> None:
            handler.pipeline.submit(event)
            seen[0] = next(submitted)

        try:
            # Phase 1: 2,000 calls; the server is stopped while they are being written.
            phase1 = threading.Thread(target=pg_cluster.produce, args=(submit, 250, 8, 0.004))
            phase1.start()
            while seen[0] < 800:
                time.sleep(0.005)
            cluster.stop()
            phase1.join()
            # Phase 2: 2,000 calls, all submitted (and returned) while the server is down.
            pg_cluster.produce(submit, 250, 8, 0.002)
            assert not cluster.running()
            cluster.start()
            # Phase 3: 1,000 calls after the restart.
            pg_cluster.produce(submit, 125, 8, 0.002)
            # The first flush may report False: a batch that met the backoff right after the restart
            # was spilled (not lost) and is replayed by this same flush. A second flush finds nothing left.
            handler.flush(120)
            assert handler.flush(30)
            stats = handler.stats()
        finally:
            handler.shutdown()
        assert seen[0] == 5000
        assert _count(url) == (5000, 5000)
        assert stats["dropped"] == {}
        assert sink.spilled_rows > 0 and sink.replayed_rows == sink.spilled_rows
        assert SpillDir(tmp_path / "spill").pending() == []


_PROCESS = """
import sys
from tests import pg_cluster
from vital_callbacks import VitalCallbackHandler

handler = VitalCallbackHandler()
if sys.argv[1] == "produce":
    pg_cluster.produce(handler.pipeline.submit, int(sys.argv[2]) // 8)  # then exit: atexit keeps or spills
else:
    print("flushed", handler.flush(60))
"""


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_a_new_process_replays_what_a_dead_process_left(cluster: pg_cluster.PrivateCluster, tmp_path: Path,
                                                        journal: bool) -> None:
    """A process that exits while the server is down keeps its 20,000 calls on disk (in its journal, or
    without one in spill files) within the default 5 s shutdown timeout; the next process replays exactly
    20,000."""
    spill, journal_dir = tmp_path / "spill", tmp_path / "journal"
    with pg_cluster.fresh_database(cluster.url) as url:
        db.upgrade(url)
        env = {**os.environ, "VITAL_DATABASE_URL": url, "VITAL_SINKS": "sql", "VITAL_SPILL_DIR": str(spill),
               "VITAL_JOURNAL": str(journal).lower(), "VITAL_JOURNAL_DIR": str(journal_dir),
               "PYTHONPATH": str(ROOT)}
        cluster.stop()
        try:
            first = subprocess.run([sys.executable, "-c", _PROCESS, "produce", "20000"], env=env, cwd=ROOT,
                                   capture_output=True, text=True, timeout=300)
            assert first.returncode == 0, first.stderr
            kept = sum(waiting_events(d) for d in journal_dir.iterdir()) if journal_dir.exists() else 0
            spilled = SpillDir(spill).pending_rows()
            if journal:  # the journal holds them all (some may also be in a spill file, from a mid-run retry)
                assert kept == 20000
            else:
                assert (kept, spilled) == (0, 20000)
            assert "not delivered" not in first.stderr
        finally:
            cluster.start()
        second = subprocess.run([sys.executable, "-c", _PROCESS, "replay"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert "flushed True" in second.stdout
        assert _count(url) == (20000, 20000)
        assert SpillDir(spill).pending() == []
        if journal:
            assert "replayed 20000 journaled events" in second.stderr, second.stderr
            assert sum(waiting_events(d) for d in journal_dir.iterdir()) == 0
