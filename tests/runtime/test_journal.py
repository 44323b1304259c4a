"""The durable journal: written before export, acknowledged after, replayed by the next process.

The unit tests drive :class:`Journal` directly; the crash tests kill a real process with SIGKILL after a
burst and count the rows the next start stores, on SQLite and on a private PostgreSQL cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from msgspec.structs import replace
from sqlalchemy import create_engine, text

from tests import pg_cluster
from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler
from vital_callbacks.core.codec import decode, encode
from vital_callbacks.core.events import Cost, Event, GraphRun, LLMCall, TokenUsage
from vital_callbacks.runtime.journal import Journal, default_journal_dir, waiting_events
from vital_callbacks.runtime.pipeline import Pipeline
from vital_callbacks.sinks.base import DropReason, ExportResult, Sink
from vital_callbacks.store import migrate

ROOT = Path(__file__).resolve().parents[2]


def calls(n: int) -> list[LLMCall]:
    return [pg_cluster.llm_call(i) for i in range(n)]


def collect(seen: list[Event]) -> Callable[[list[Event]], bool]:
    def deliver(events: list[Event]) -> bool:
        seen.extend(events)
        return True

    return deliver


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.journal")) if directory.exists() else []


def test_events_round_trip_through_a_journal_line() -> None:
    """Every field an event carries comes back equal (Decimals, tuples, nested usage and cost)."""
    priced = replace(pg_cluster.llm_call(1), tags=("a", "b"), raw_usage='{"prompt_tokens": 100}',
                     cost=Cost(Decimal("0.000123"), Decimal("0.0000456"), Decimal("0.0001686"), detail="flex"))
    root = GraphRun(run_id="g", parent_run_id=None, trace_id="g", usage=TokenUsage(1, 2, 3), cost_usd=None)
    line = encode([priced, root])
    count, _, body = line.rstrip(b"\n").partition(b" ")
    assert count == b"2"
    assert decode(body) == [priced, root]


def test_acknowledged_events_leave_nothing_behind(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(calls(3))
    journal.append(calls(2))
    assert waiting_events(tmp_path) == 5
    journal.acknowledge(3)
    assert waiting_events(tmp_path) == 5  # the segment still holds two unresolved events
    journal.acknowledge(2)
    assert waiting_events(tmp_path) == 0  # emptied in place (its lock kept for the next events)
    journal.close()
    assert segments(tmp_path) == []


def test_full_segments_are_deleted_once_acknowledged(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=2000)
    for _ in range(6):
        journal.append(calls(2))
    assert len(segments(tmp_path)) >= 3
    journal.acknowledge(8)
    assert waiting_events(tmp_path) == 4
    journal.acknowledge(4)
    journal.close()
    assert segments(tmp_path) == []


def test_a_segment_of_a_live_process_is_never_replayed(tmp_path: Path) -> None:
    """Two writers sharing a folder (gunicorn workers): each replays only what an ended process left."""
    live, other = Journal(tmp_path), Journal(tmp_path)
    live.append(calls(4))
    seen: list[Event] = []
    found = other.replay(collect(seen))
    assert (found.events, seen) == (0, [])
    live.close()  # the process ends without acknowledging: its segment is now an orphan
    found = other.replay(collect(seen))
    assert (found.events, found.segments, len(seen)) == (4, 1, 4)
    assert segments(tmp_path) == []


def test_a_replay_that_cannot_deliver_leaves_the_segment(tmp_path: Path) -> None:
    dead = Journal(tmp_path)
    dead.append(calls(3))
    dead.close()
    found = Journal(tmp_path).replay(lambda events: False)
    assert not found.complete and found.events == 0
    assert waiting_events(tmp_path) == 3


def test_a_line_cut_short_by_a_kill_is_counted_by_its_event_count(tmp_path: Path) -> None:
    dead = Journal(tmp_path)
    dead.append(calls(2))
    dead.append(calls(5))
    dead.close()
    [path] = segments(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # the last write was cut short
    seen: list[Event] = []
    found = Journal(tmp_path).replay(collect(seen))
    assert (found.events, found.damaged, len(seen)) == (2, 5, 2)


def test_keep_stops_acknowledging_and_says_which_events_are_not_in_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(calls(4))
    journal.acknowledge(1)
    assert journal.keep(3) == []  # the 3 unresolved ones are all written
    journal.acknowledge(3)  # resolved after the keep: stays for the next process anyway
    journal.append(calls(2))
    assert journal.keep(2) == []
    journal.close()
    # 5 kept, and the one resolved before the keep, still in the same segment: replayed again, harmlessly
    # (the store takes each run id once).
    assert waiting_events(tmp_path) == 6


class _FullDisk:
    """``os.write`` that fails (ENOSPC) while ``full``, after writing ``partial`` bytes of the data."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, partial: int = 0) -> None:
        self.full = False
        self.partial = partial
        real = os.write

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.full and len(data) > 60:  # not the segment header
                if self.partial:
                    real(fd, bytes(data[:self.partial]))
                raise OSError(28, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr("vital_callbacks.runtime.journal.os.write", write)


def test_events_a_full_disk_kept_out_of_the_journal_are_named_exactly(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """10 written, 10 refused by a full disk, 10 written: keep() names the middle 10, so the caller spills
    exactly those (and the account has no event in two places or in none)."""
    disk = _FullDisk(monkeypatch)
    journal = Journal(tmp_path)
    journal.append(calls(10))
    disk.full = True
    journal.append(calls(10))
    assert journal.failed
    disk.full = False
    journal.append(calls(10))
    assert journal.keep(30) == list(range(10, 20))
    journal.close()
    assert waiting_events(tmp_path) == 20


def test_a_write_cut_short_by_a_full_disk_leaves_no_half_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = _FullDisk(monkeypatch, partial=50)
    journal = Journal(tmp_path)
    journal.append(calls(1))
    disk.full = True
    journal.append(calls(5))  # half a line written, then ENOSPC
    disk.full = False
    journal.append(calls(2))
    journal.close()
    seen: list[Event] = []
    found = Journal(tmp_path).replay(collect(seen))
    assert (found.events, found.damaged) == (3, 0)


def test_a_child_forked_during_a_replay_does_not_hold_the_segment(tmp_path: Path) -> None:
    """The claim's descriptor is closed in a forked child, so the child never holds an orphan's lock."""
    dead = Journal(tmp_path)
    dead.append(calls(2))
    dead.close()
    replayer = Journal(tmp_path)
    children: list[int] = []

    def deliver(events: list[Event]) -> bool:
        pid = os.fork()
        if pid == 0:  # the child: what a gunicorn worker forked at this moment would do
            replayer.after_fork()
            os.write(ready_w, b"r")
            os.read(reader, 1)  # lives on until the parent has looked
            os._exit(0)
        children.append(pid)
        os.read(ready_r, 1)
        return False  # the parent gives the segment back (the store is down, say)

    reader, writer = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        replayer.replay(deliver)
        seen: list[Event] = []
        assert Journal(tmp_path).replay(collect(seen)).events == 2  # not locked by the live child
    finally:
        os.write(writer, b"x")
        for pid in children:
            os.waitpid(pid, 0)


class Refusing(Sink):
    """A store that is down for as long as ``down`` is set."""

    name = "sql"
    journal_key = "test-store"

    def __init__(self) -> None:
        self.down = True
        self.stored: dict[str, Event] = {}

    def export(self, batch: list[Event]) -> ExportResult:  # type: ignore[override]
        if self.down:
            return ExportResult.FAILURE
        self.stored.update((e.run_id, e) for e in batch)
        return ExportResult.SUCCESS


def test_shutdown_with_the_store_down_keeps_the_backlog_for_the_next_pipeline(tmp_path: Path) -> None:
    """The account balances in both processes: the first keeps everything (spilled into the journal, none
    dropped), the second recovers and delivers exactly those events."""
    first = Refusing()
    pipeline = Pipeline([first], journal_root=tmp_path, max_retries=1, retry_backoff_s=0.01, flush_interval_s=0.02)
    for call in calls(300):
        pipeline.submit(call)
    pipeline.shutdown(10)
    stats = pipeline.stats()
    assert stats.spilled == {"sql": 300} and stats.kept == {"sql": 300} and stats.dropped == {}
    second = Refusing()
    second.down = False
    pipeline = Pipeline([second], journal_root=tmp_path, flush_interval_s=0.02)
    assert pipeline.flush(10)
    stats = pipeline.stats()
    pipeline.shutdown(10)
    assert len(second.stored) == 300
    assert stats.recovered == {"sql": 300} and stats.exported == {"sql": 300}
    assert stats.submitted + stats.recovered["sql"] == stats.exported["sql"] + stats.spilled.get("sql", 0)
    assert not any(tmp_path.rglob("*.journal"))


class Hanging(Sink):
    """An export that never returns until the test lets it (a hung store, without a deadline of its own)."""

    name = "sql"
    journal_key = "hanging-store"

    def __init__(self, succeed: bool) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.succeed = succeed

    def export(self, batch: list[Event]) -> ExportResult:  # type: ignore[override]
        self.entered.set()
        self.release.wait(30)
        return ExportResult.SUCCESS if self.succeed else ExportResult.FAILURE


@pytest.mark.parametrize("succeed", [True, False], ids=["export-ends-ok", "export-ends-failed"])
def test_a_worker_given_up_at_the_deadline_is_counted_once(tmp_path: Path, succeed: bool) -> None:
    """The hung export's events and the queue behind it are kept in the journal when the deadline passes;
    whatever the export does afterwards changes nothing in the account."""
    sink = Hanging(succeed)
    pipeline = Pipeline([sink], journal_root=tmp_path, flush_interval_s=0.02, batch_size=50, max_retries=0)
    for call in calls(120):
        pipeline.submit(call)
    assert sink.entered.wait(10)
    pipeline.shutdown(0.5)
    before = pipeline.stats()
    sink.release.set()
    time.sleep(0.3)
    after = pipeline.stats()
    assert before.kept == {"sql": 120} and before.spilled == {"sql": 120} and before.dropped == {}
    assert after == before
    assert after.queue_depth["sql"] == 0


def test_damaged_journal_lines_are_counted_as_dropped_with_the_reason(tmp_path: Path) -> None:
    sink = Refusing()
    sink.down = False
    directory = default_journal_dir(tmp_path, sink.journal_key or "")
    dead = Journal(directory)
    dead.append(calls(3))
    dead.append(calls(4))
    dead.close()
    [path] = segments(directory)
    path.write_bytes(path.read_bytes()[:-10])
    pipeline = Pipeline([sink], journal_root=tmp_path, flush_interval_s=0.02)
    pipeline.flush(10)
    stats = pipeline.stats()
    pipeline.shutdown(10)
    assert len(sink.stored) == 3
    assert stats.dropped_reasons == {"sql": {DropReason.DAMAGED_JOURNAL: 4}}
    assert stats.recovered == {"sql": 7}


def test_the_in_memory_sink_and_an_in_memory_store_have_no_journal(tmp_path: Path) -> None:
    handler = VitalCallbackHandler(Settings(journal_dir=tmp_path), sinks=[InMemorySink()])
    handler.runtime.submit(calls(1)[0])
    assert handler.flush()
    handler.shutdown()
    from vital_callbacks.sinks.sql import SQLSink

    assert SQLSink("sqlite://").journal_key is None
    assert SQLSink("sqlite:///relative.db").journal_key == f"sqlite:///{os.path.abspath('relative.db')}"
    assert not any(tmp_path.iterdir())


# -- kill -9 -----------------------------------------------------------------------------------------
_BURST = """
import os, signal, sys, time
from tests import pg_cluster
from vital_callbacks import VitalCallbackHandler

handler = VitalCallbackHandler()
if sys.argv[1] == "burst":
    n = int(sys.argv[2])
    pg_cluster.produce(handler.pipeline.submit, n // 8)  # 8 threads
    exported = -1
    while exported != handler.stats()["exported"].get("sql", 0):  # until the worker is idle, waiting
        exported = handler.stats()["exported"].get("sql", 0)
        time.sleep(0.3)
    # A tail the worker waits to fill a batch with (VITAL_FLUSH_INTERVAL_S is long), 300 ms before the
    # kill: without the journal these are certainly lost.
    for i in range(7):
        handler.pipeline.submit(pg_cluster.llm_call(i))
    time.sleep(0.3)
    print("killing", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
else:
    print("flushed", handler.flush(120), flush=True)
"""


def _burst_then_kill(env: dict[str, str], n: int) -> str:
    first = subprocess.run([sys.executable, "-c", _BURST, "burst", str(n)], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = subprocess.run([sys.executable, "-c", _BURST, "replay"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "flushed True" in second.stdout, second.stderr
    return second.stderr


def _env(tmp_path: Path, url: str, journal: bool) -> dict[str, str]:
    return {**os.environ, "VITAL_DATABASE_URL": url, "VITAL_SINKS": "sql", "VITAL_JOURNAL": str(journal).lower(),
            "VITAL_JOURNAL_DIR": str(tmp_path / "journal"), "VITAL_SPILL_DIR": str(tmp_path / "spill"),
            "VITAL_FLUSH_INTERVAL_S": "30", "PYTHONPATH": str(ROOT)}


def _sqlite_rows(path: Path) -> int:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(DISTINCT run_id) FROM llm_calls")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal (control)"])
def test_kill_9_after_a_burst_loses_nothing_on_sqlite(tmp_path: Path, journal: bool) -> None:
    """8 threads submit 4,000 calls, 300 ms idle, 7 more, 300 ms idle, SIGKILL: the next start stores
    exactly 4,007. The control without the journal shows the test can fail: the tail is lost."""
    db = tmp_path / "store.db"
    migrate.upgrade(f"sqlite:///{db}")
    stderr = _burst_then_kill(_env(tmp_path, f"sqlite:///{db}", journal), 4000)
    if journal:
        assert _sqlite_rows(db) == 4007
        assert "replayed" in stderr and "journaled events" in stderr
    else:
        assert _sqlite_rows(db) < 4007


def test_kill_9_after_a_burst_loses_nothing_on_postgresql(cluster: pg_cluster.PrivateCluster, tmp_path: Path) -> None:
    with pg_cluster.fresh_database(cluster.url) as url:
        migrate.upgrade(url)
        _burst_then_kill(_env(tmp_path, url, True), 4000)
        row = pg_cluster.query(url, "SELECT COUNT(*) AS n, COUNT(DISTINCT run_id) AS d FROM llm_calls")[0]
        assert (row["n"], row["d"]) == (4007, 4007)


def test_exit_while_postgresql_is_stopped_with_sigstop_then_replay_stores_exactly_n(
        cluster: pg_cluster.PrivateCluster, tmp_path: Path) -> None:
    """The server hangs (SIGSTOP: connections accepted by the kernel, never answered) while a process
    exits: the exit ends within the shutdown timeout with every event kept; after SIGCONT the next
    process stores exactly N rows."""
    with pg_cluster.fresh_database(cluster.url) as url:
        migrate.upgrade(url)
        env = {**_env(tmp_path, url, True), "VITAL_FLUSH_INTERVAL_S": "0.05", "VITAL_SHUTDOWN_TIMEOUT_S": "3",
               "VITAL_DATABASE_STATEMENT_TIMEOUT_S": "30"}
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        script = textwrap.dedent("""
            import sys
            from tests import pg_cluster
            from vital_callbacks import VitalCallbackHandler
            handler = VitalCallbackHandler()
            handler.flush(30)  # connected while the server answers
            print("ready", flush=True)
            sys.stdin.readline()  # the test stops the server now
            pg_cluster.produce(handler.pipeline.submit, 250)  # 2,000 calls, then exit
        """)
        child = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            _signal_cluster(postmaster, signal.SIGSTOP)
            child.stdin.write("go\n")
            child.stdin.flush()
            _, stderr = child.communicate(timeout=60)  # a hang detector, not a timing assertion
        finally:
            _signal_cluster(postmaster, signal.SIGCONT)
            if child.poll() is None:
                child.kill()
        assert child.returncode == 0, stderr
        assert "not delivered" not in stderr
        second = subprocess.run([sys.executable, "-c", _BURST, "replay"], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert "flushed True" in second.stdout, second.stderr
        row = pg_cluster.query(url, "SELECT COUNT(*) AS n, COUNT(DISTINCT run_id) AS d FROM llm_calls")[0]
        assert (row["n"], row["d"]) == (2000, 2000)


def _signal_cluster(postmaster: int, signum: int) -> None:
    """The postmaster and its children (the backends that hold the client's connections)."""
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
