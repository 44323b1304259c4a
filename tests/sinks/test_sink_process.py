"""The SQL sink in a process of its own (``VITAL_SINK_PROCESSES=sql``): the same rows and the same account as
on its thread, through a real child process, when it is killed, cannot start, or its parent forks or dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import create_engine, text

from tests import pg_cluster
from tests.graphs import INPUT, METADATA, build_graph
from tests.langfuse_receiver import LangfuseReceiver
from tests.sinks.conftest import Store
from vital_callbacks import InMemorySink, LLMCall, Runtime, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.runtime import sink_channel
from vital_callbacks.runtime.factory import build_sinks
from vital_callbacks.runtime.sink_channel import HUNG_S
from vital_callbacks.runtime.sink_process import ProcessSink, child_settings
from vital_callbacks.sinks.base import DropReason, Sink
from vital_callbacks.sinks.langfuse import LangfuseSink
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.store import migrate

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sink processes are for POSIX systems")
ROOT = Path(__file__).resolve().parents[2]


def sql_sink(db: Path, *, own_process: bool = True) -> Sink:
    """The SQL sink as the settings build it, in a process of its own or not."""
    settings = Settings(sinks=["sql"], database_url=f"sqlite:///{db}", sink_processes=["sql"] if own_process else None)
    (sink,) = build_sinks(settings)
    return sink


def child_pid(sink: Sink) -> int:
    assert isinstance(sink, ProcessSink) and sink.child.pid is not None
    return sink.child.pid


def count(path: Path, table: str, where: str = "1=1") -> int:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one())
    finally:
        engine.dispose()


def rows_of(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows, sorted."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return {table: sorted((tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}"))), key=repr)
                    for table in ("graph_runs", "node_runs", "llm_calls", "tool_calls", "retriever_calls")}
    finally:
        engine.dispose()


def alive(pid: int, *, zombie_ended: bool = False) -> bool:
    """Whether ``pid`` still exists. A zombie (ended, not yet waited for) counts as alive unless
    ``zombie_ended``: a child of this process that the library stopped must also have been waited for;
    an orphan is its new parent's to wait for."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return not (zombie_ended and state == "Z")


def wait_until(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_same_rows_as_on_the_sinks_thread(tmp_path: Path) -> None:
    """One handler, the reference graph, two SQL sinks: one writing on its thread, one through its writer
    process. Every row of every table is the same in both stores, every event exported, and the writer is
    a process of its own that ends with the sink."""
    here = sql_sink(tmp_path / "thread.db", own_process=False)
    there = sql_sink(tmp_path / "process.db")
    handler = VitalCallbackHandler(Settings(), sinks=[here, there])
    graph = build_graph()
    for _ in range(20):
        graph.invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    assert handler.flush(60)
    stats = handler.stats()
    assert not stats["dropped"] and not stats["problems"], stats
    assert stats["exported"]["sql"] > 100
    assert isinstance(here, SQLSink)
    pid = child_pid(there)
    assert pid != os.getpid()
    assert handler.shutdown()
    assert wait_until(lambda: not alive(pid))
    rows = rows_of(tmp_path / "process.db")
    assert rows == rows_of(tmp_path / "thread.db")
    assert len(rows["graph_runs"]) == 20 and len(rows["llm_calls"]) > 20


def test_a_row_the_store_rejects_is_counted_and_logged_here(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """One row the database rejects, in the writer process: the rest of its batch stored, the one counted as
    dropped (rejected by the store) in this process's account and logged through this process's logging."""
    db = tmp_path / "reject.db"
    sink = sql_sink(db)
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    handler.submit(LLMCall(run_id="warm", parent_run_id=None, trace_id="warm", model="ok"))
    assert handler.flush(60)  # the store exists and is migrated
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER reject BEFORE INSERT ON llm_calls WHEN NEW.model = 'poison' "
                          "BEGIN SELECT RAISE(ABORT, 'rejected'); END"))
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        for i in range(3):
            handler.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i),
                                   model="poison" if i == 1 else "ok"))
        assert not handler.flush(60)  # something was lost, so flush says so
    stats = handler.stats()
    assert stats["dropped_reasons"] == {"sql": {DropReason.REJECTED: 1}}
    assert stats["exported"] == {"sql": 3}
    assert count(db, "llm_calls") == 3  # warm, 0 and 2
    assert any("rejected" in r.getMessage() and r.name == "vital_callbacks" for r in caplog.records)
    handler.shutdown()


def test_a_killed_writer_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    """``kill -9`` of the writer between batches: the next batch fails, is retried through a new writer
    process, and every event is stored once."""
    db = tmp_path / "killed.db"
    sink = sql_sink(db)
    handler = VitalCallbackHandler(Settings(retry_backoff_s=0.05), sinks=[sink])
    graph = build_graph()
    for _ in range(5):
        graph.invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    first = child_pid(sink)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: not alive(first, zombie_ended=True))
    for _ in range(5):
        graph.invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    stats = handler.stats()
    assert not stats["dropped"], stats
    assert stats["failed_exports"].get("sql", 0) >= 1  # the batch the dead writer could not take, then retried
    assert child_pid(sink) != first
    assert not alive(first)  # the library waited for the child it found dead
    assert not stats["problems"], stats  # the notice of the restart went once the new child answered
    assert count(db, "graph_runs") == 10
    handler.shutdown()


def test_a_writer_that_cannot_start_leaves_the_writing_to_this_process(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """An embedding server's ``sys.executable`` is not Python: the child ends before its first reply, the
    sink says so once and writes on its own thread; nothing is lost."""
    monkeypatch.setattr(sys, "executable", "/bin/false")
    db = tmp_path / "fallback.db"
    sink = sql_sink(db)
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        handler = VitalCallbackHandler(Settings(), sinks=[sink])
        for _ in range(3):
            build_graph().invoke(INPUT, config={"callbacks": [handler]})
        assert handler.flush(60)
    assert isinstance(sink, ProcessSink) and not sink.child.usable
    assert count(db, "graph_runs") == 3
    notes = [r.getMessage() for r in caplog.records if "does not run in a process of its own" in r.getMessage()]
    assert len(notes) == 1, notes
    handler.shutdown()


def test_the_setting_chooses_which_sinks_run_elsewhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``VITAL_SINK_PROCESSES=sql,prometheus``: the SQL sink in a process of its own; Prometheus (whose
    registry is this process's) and an in-memory store stay here, each with a log line saying why."""
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        on_file = build_sinks(Settings(sinks=["sql", "prometheus"], sink_processes="sql,prometheus",  # type: ignore[arg-type]
                                       database_url=f"sqlite:///{tmp_path / 'x.db'}"))
        in_memory = build_sinks(Settings(sinks=["sql"], sink_processes=["sql"], database_url="sqlite://"))
    assert [type(s).__name__ for s in on_file] == ["ProcessSink", "PrometheusSink"]
    assert on_file[0].name == "sql" and on_file[0].journal_key == SQLSink(f"sqlite:///{tmp_path / 'x.db'}").journal_key
    assert type(in_memory[0]) is SQLSink
    assert len([r for r in caplog.records if "runs in this process" in r.getMessage()]) == 2
    assert type(build_sinks(Settings(sinks=["sql"], database_url=f"sqlite:///{tmp_path / 'y.db'}"))[0]) is SQLSink


def run(source: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    preamble = textwrap.dedent("""
        import os, sys
        from langchain_core.messages.ai import UsageMetadata
        from vital_callbacks import Settings, VitalCallbackHandler
        from vital_callbacks.testing.fakes import ScriptedChatModel

        usage = UsageMetadata(input_tokens=10, output_tokens=5, total_tokens=15)
        llm = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"], usage=usage)
    """)
    done = subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(source)], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, "VITAL_SINK_PROCESSES": "sql"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_forked_child_starts_its_own_writer_and_both_deliver(tmp_path: Path) -> None:
    """``os.fork()`` after the writer started: the child's calls go through a writer of its own (another
    pid), the parent's through its first one, each stored once, and both writers end with their process."""
    db = tmp_path / "fork.db"
    done = run(f"""
        handler = VitalCallbackHandler(Settings(database_url="sqlite:///{db}", sinks=["sql"]))
        sink = handler.runtime.pipeline.sinks[0].child
        for _ in range(20):
            llm.invoke("before", config={{"callbacks": [handler], "metadata": {{"tenant_id": "parent"}}}})
        assert handler.flush(60)
        parents = sink.pid
        pid = os.fork()
        who = "child" if pid == 0 else "parent"
        for _ in range(200):
            llm.invoke("hi", config={{"callbacks": [handler], "metadata": {{"tenant_id": who}}}})
        assert handler.flush(60)
        print(who, sink.pid, parents, flush=True)
        if pid == 0:
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
    """)
    pids = {line.split()[0]: (int(line.split()[1]), int(line.split()[2])) for line in done.stdout.splitlines()}
    assert pids["parent"][0] == pids["parent"][1]  # the parent kept its writer
    assert pids["child"][0] != pids["child"][1]  # the child started its own
    assert count(db, "llm_calls", "tenant_id = 'child'") == 200
    assert count(db, "llm_calls", "tenant_id = 'parent'") == 220
    assert wait_until(lambda: not any(alive(p, zombie_ended=True) for p in (pids["child"][0], pids["parent"][0])))


def test_the_writer_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    """``kill -9`` of the application after a flush: its sink's process sees the end of its socket and ends
    too (no orphan); what was flushed is stored."""
    db = tmp_path / "orphan.db"
    script = textwrap.dedent(f"""
        import os, signal
        from langchain_core.messages.ai import UsageMetadata
        from vital_callbacks import Settings, VitalCallbackHandler
        from vital_callbacks.testing.fakes import ScriptedChatModel
        usage = UsageMetadata(input_tokens=10, output_tokens=5, total_tokens=15)
        llm = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"], usage=usage)
        handler = VitalCallbackHandler(Settings(database_url="sqlite:///{db}", sinks=["sql"]))
        for _ in range(50):
            llm.invoke("hi", config={{"callbacks": [handler]}})
        assert handler.flush(60)
        print(handler.runtime.pipeline.sinks[0].child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, text=True, capture_output=True, timeout=120,
                            env={**os.environ, "VITAL_SINK_PROCESSES": "sql"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    writer = int(killed.stdout.split()[0])
    assert wait_until(lambda: not alive(writer, zombie_ended=True))
    assert count(db, "llm_calls") == 50


def test_postgresql_in_its_own_process_stores_what_its_thread_would(store: Store) -> None:
    """On SQLite and PostgreSQL (asyncpg in the child): the reference graph's events, as an in-memory sink
    beside it saw them, are the store's rows, each once, with the same costs."""
    memory = InMemorySink()
    (sink,) = build_sinks(store.settings(sink_processes=["sql"]))
    assert isinstance(sink, ProcessSink)
    handler = VitalCallbackHandler(Settings(), sinks=[sink, memory])
    graph = build_graph()
    for _ in range(10):
        graph.invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    assert handler.flush(60)
    assert not handler.stats()["dropped"]
    handler.shutdown()
    calls = [e for e in memory.events if isinstance(e, LLMCall)]
    rows = store.rows("llm_calls")
    assert sorted(r["run_id"] for r in rows) == sorted(e.run_id for e in calls)
    assert sum(r["total_cost"] or 0 for r in rows) == sum(e.cost.total for e in calls if e.cost is not None)
    assert store.count("graph_runs") == 10


def test_a_postgresql_restart_mid_run_loses_and_duplicates_nothing(cluster: pg_cluster.PrivateCluster,
                                                                   tmp_path: Path) -> None:
    """The PostgreSQL sink in its own process, 2,000 calls while the server stops and restarts: exactly
    2,000 rows after flush(); what could not be written meanwhile was spilled here and replayed by the child."""
    with pg_cluster.fresh_database(cluster.url) as url:
        migrate.upgrade(url)
        settings = Settings(database_url=url, sinks=["sql"], sink_processes=["sql"], spill_dir=tmp_path / "spill",
                            batch_size=128, flush_interval_s=0.05, max_retries=1, retry_backoff_s=0.05)
        handler = VitalCallbackHandler(runtime=Runtime(settings))
        assert isinstance(handler.pipeline.sinks[0], ProcessSink)

        def submit(event: LLMCall) -> None:
            handler.pipeline.submit(event)

        try:
            pg_cluster.produce(submit, 100, 8, 0.002)
            assert handler.flush(60)
            cluster.stop()
            pg_cluster.produce(submit, 100, 8, 0.002)
            handler.flush(30)  # False: the server is down; the batches go to the spill after their retries
            cluster.start()
            pg_cluster.produce(submit, 50, 8, 0.002)
            handler.flush(120)
            assert handler.flush(30)
            stats = handler.stats()
        finally:
            handler.runtime.shutdown()
        row = pg_cluster.query(url, "SELECT COUNT(*) AS n, COUNT(DISTINCT run_id) AS d FROM llm_calls")[0]
    assert stats["dropped"] == {}, stats
    assert stats["spilled"].get("sql", 0) > 0 and stats["recovered"]["sql"] == stats["spilled"]["sql"]
    assert (int(row["n"]), int(row["d"])) == (2000, 2000)


def test_a_hung_child_never_holds_a_shutdown_past_its_deadline(tmp_path: Path) -> None:
    """The child stopped (SIGSTOP) with batches to write: ``shutdown(2)`` returns rather than wait for the
    child's silence to mark it hung, what was not written stays in the journal, and the next process on
    the store delivers all of it."""
    db = tmp_path / "hung.db"
    settings = Settings(database_url=f"sqlite:///{db}", sinks=["sql"], sink_processes=["sql"],
                        journal_dir=tmp_path / "journal", flush_interval_s=0.05)
    handler = VitalCallbackHandler(runtime=Runtime(settings))
    graph = build_graph()
    for _ in range(3):
        graph.invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    pid = child_pid(handler.pipeline.sinks[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(5):
            graph.invoke(INPUT, config={"callbacks": [handler]})
        started = time.monotonic()
        handler.runtime.shutdown(2.0)  # True or False: what it could not write is kept, not lost
        took = time.monotonic() - started
        stats = handler.stats()
        assert not alive(pid)  # stopped and waited for by the library, within the shutdown
    finally:
        if alive(pid, zombie_ended=True):
            os.kill(pid, signal.SIGKILL)
    assert took < HUNG_S / 2, took  # not a speed figure: waiting for the stopped child would take HUNG_S
    assert stats["kept_in_journal"].get("sql", 0) > 0 and not stats["dropped"], stats
    after = VitalCallbackHandler(runtime=Runtime(settings.model_copy(update={"sink_processes": None})))
    assert after.flush(60)
    after.runtime.shutdown()
    assert count(db, "graph_runs") == 8


def test_a_flush_before_the_child_answers_does_not_give_it_up(tmp_path: Path) -> None:
    """A child slow to start (stopped before it said anything): a short flush returns False and leaves the
    child alone; once it runs, the same child delivers everything."""
    db = tmp_path / "slow.db"
    sink = sql_sink(db)
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    assert wait_until(lambda: isinstance(sink, ProcessSink) and sink.child.pid is not None)
    pid = child_pid(sink)
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            build_graph().invoke(INPUT, config={"callbacks": [handler]})
        assert not handler.flush(1.5)
        assert isinstance(sink, ProcessSink) and sink.child.usable and sink.child.pid == pid
    finally:
        os.kill(pid, signal.SIGCONT)
    assert handler.flush(60)
    assert child_pid(sink) == pid and count(db, "graph_runs") == 3
    assert not handler.stats()["dropped"]
    handler.shutdown()


def test_what_the_child_prints_at_start_never_reaches_the_answers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``sitecustomize`` on the path that prints at every interpreter start: the answers travel apart
    from the child's stdout, so the events are delivered all the same."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("print('hello from sitecustomize')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    db = tmp_path / "printed.db"
    handler = VitalCallbackHandler(Settings(), sinks=[sql_sink(db)])
    for _ in range(3):
        build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    handler.shutdown()
    assert count(db, "graph_runs") == 3


def written_down_by_the_child(tmp_path: Path, out: Path, expression: str) -> Path:
    """A folder with a ``sitecustomize`` that has a sink's process, as it ends, write ``expression`` (evaluated
    there, with ``sys`` imported) to ``out``; put it on the path before the child starts."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import atexit, sys

        def write_down():
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            if spec is not None and spec.name == "vital_callbacks.runtime.sink_child":
                open({str(out)!r}, "w").write({expression})

        atexit.register(write_down)
    """))
    return site


def test_the_sinks_process_imports_neither_langchain_nor_the_price_catalog(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The child writes rows; what the hooks and the pricing need (LangChain, LangGraph, genai-prices)
    is this process's, and would only take the child's memory. A ``sitecustomize`` on the path has
    the child write down, as it ends, the modules it imported."""
    out = tmp_path / "modules"
    monkeypatch.syspath_prepend(str(written_down_by_the_child(tmp_path, out, '"\\n".join(sys.modules)')))
    db = tmp_path / "lean.db"
    handler = VitalCallbackHandler(Settings(), sinks=[sql_sink(db)])
    for _ in range(3):
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    assert handler.shutdown()
    assert count(db, "llm_calls") == 6
    modules = set(out.read_text().split())
    assert "vital_callbacks.sinks.sql.sink" in modules and "sqlalchemy" in modules
    assert not modules & {"langchain_core", "langgraph", "genai_prices", "tiktoken", "vital_callbacks.pricing",
                          "vital_callbacks.enrich", "vital_callbacks.capture"}


def test_the_sinks_process_runs_with_the_applications_interpreter_options(tmp_path: Path) -> None:
    """An application started as ``python -O -X faulthandler``: its sink's process runs with the same
    options (a ``sitecustomize`` on the path has the child write down the ones it has)."""
    out = tmp_path / "flags"
    site = written_down_by_the_child(tmp_path, out, 'f"{sys.flags.optimize} {sorted(sys._xoptions)}"')
    script = textwrap.dedent(f"""
        from tests.graphs import INPUT, build_graph
        from vital_callbacks import Settings, VitalCallbackHandler
        from vital_callbacks.runtime.factory import build_sinks

        settings = Settings(sinks=["sql"], sink_processes=["sql"], database_url="sqlite:///{tmp_path / 'o.db'}")
        handler = VitalCallbackHandler(Settings(), sinks=build_sinks(settings))
        build_graph().invoke(INPUT, config={{"callbacks": [handler]}})
        # No assert: -O removes them. A first start under -O may compile every module: a flush waits longer
        # than a shutdown.
        if not (handler.flush(60) and handler.shutdown()):
            raise SystemExit("not delivered")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, "-O", "-X", "faulthandler", "-c", script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "1 ['faulthandler']"
    assert count(tmp_path / "o.db", "graph_runs") == 1


def test_no_python_to_start_leaves_the_sink_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sys.executable`` empty (an embedded interpreter): the sink runs in this process, nothing lost."""
    monkeypatch.setattr(sys, "executable", "")
    db = tmp_path / "embedded.db"
    sink = sql_sink(db)
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    assert isinstance(sink, ProcessSink) and not sink.child.usable
    handler.shutdown()
    assert count(db, "graph_runs") == 1


def test_a_relative_store_is_the_one_named_where_the_sink_was_built(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``sqlite:///rel.db`` built in one folder, the child started after a ``chdir`` elsewhere: the rows are
    in the first folder's file, the one the journal is keyed to."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    (sink,) = build_sinks(Settings(sinks=["sql"], sink_processes=["sql"], database_url="sqlite:///rel.db"))
    monkeypatch.chdir(tmp_path / "b")
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    handler.shutdown()
    assert count(tmp_path / "a" / "rel.db", "graph_runs") == 1
    assert not (tmp_path / "b" / "rel.db").exists()


def test_infinite_and_nan_values_are_stored_as_on_the_sinks_thread(tmp_path: Path) -> None:
    """Floats JSON has no word for (an infinite duration, a NaN temperature) reach the child as they are:
    both stores hold the same rows, nothing is counted lost."""
    here = sql_sink(tmp_path / "thread.db", own_process=False)
    there = sql_sink(tmp_path / "process.db")
    handler = VitalCallbackHandler(Settings(), sinks=[here, there])
    for i, (duration, temperature) in enumerate([(float("inf"), 0.5), (0.5, float("nan")), (float("-inf"), None)]):
        handler.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i), model="m", duration_s=duration,
                               temperature=temperature))
    assert handler.flush(60)
    assert not handler.stats()["dropped"]
    handler.shutdown()
    rows = rows_of(tmp_path / "process.db")
    assert len(rows["llm_calls"]) == 3
    assert rows == rows_of(tmp_path / "thread.db")


def test_an_event_that_cannot_travel_is_counted_and_the_rest_stored(tmp_path: Path) -> None:
    """Hand-built events holding what cannot reach the child (a token count past 64 bits, which
    MessagePack has no room for; an object the encoder does not know where a string must be): each
    is counted as rejected, the rest of their batch stored."""
    db = tmp_path / "odd.db"
    handler = VitalCallbackHandler(Settings(), sinks=[sql_sink(db)])
    for i in range(5):
        handler.submit(LLMCall(run_id=str(i), parent_run_id=None, model="ok",
                               trace_id=object() if i == 2 else str(i),  # type: ignore[arg-type]
                               usage=TokenUsage(input=2**70 if i == 1 else 3)))
    assert not handler.flush(60)
    assert handler.stats()["dropped_reasons"] == {"sql": {DropReason.REJECTED: 2}}
    handler.shutdown()
    assert count(db, "llm_calls") == 3


def test_a_server_with_many_open_files_still_talks_to_its_sink_process(tmp_path: Path) -> None:
    """1,100 descriptors open before the sink starts, so its socket's number is past 1,024 (where
    ``select()`` fails): the events are delivered all the same."""
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        db = tmp_path / "fds.db"
        sink = sql_sink(db)
        handler = VitalCallbackHandler(Settings(), sinks=[sink])
        for _ in range(3):
            build_graph().invoke(INPUT, config={"callbacks": [handler]})
        assert handler.flush(60)
        assert isinstance(sink, ProcessSink) and sink.child.usable and sink.child.pid is not None
        handler.shutdown()
    finally:
        for fd in opened:
            os.close(fd)
    assert count(db, "graph_runs") == 3


def test_the_childs_settings_are_the_parents_with_absolute_paths_and_no_api_tokens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the child rebuilds: every setting as the parent has it (lists, URLs with a password, numbers),
    relative paths made absolute where the sink was built, the HTTP API's tokens left out."""
    monkeypatch.chdir(tmp_path)
    parent = Settings(database_url="postgresql://u:secret@db.example:5432/v", sinks=["sql", "prometheus"],
                      sink_processes=["sql"], spill_dir=Path("spill"), metadata_keys=["team"],
                      batch_size=128, api_tokens="acme:t0ken")  # type: ignore[arg-type]
    child = Settings.model_validate(child_settings(parent))
    assert child.database_url == parent.database_url
    assert child.spill_dir == tmp_path / "spill"
    assert child.api_tokens is None
    assert child.model_dump(exclude={"spill_dir", "api_tokens"}) == parent.model_dump(
        exclude={"spill_dir", "api_tokens"})
    relative = child_settings(Settings(database_url="sqlite:///rel.db"))
    assert relative["database_url"] == f"sqlite:///{tmp_path / 'rel.db'}"


def langfuse_in_its_process(monkeypatch: pytest.MonkeyPatch, url: str) -> VitalCallbackHandler:
    """A handler whose Langfuse sink runs in its own process, configured as a deployment does: by
    Langfuse's own variables (a fresh public key: the SDK keeps one client per key)."""
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", f"pk-lf-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-test")
    monkeypatch.setenv("LANGFUSE_BASE_URL", url)
    settings = Settings(sinks=["langfuse"], sink_processes=["langfuse"], flush_interval_s=0.05)
    return VitalCallbackHandler(runtime=Runtime(settings))


@pytest.mark.parametrize("mode", ["ok", "error"])
def test_langfuse_in_its_own_process_sends_and_counts_as_here(mode: Literal["ok", "error"],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The Langfuse sink in a process of its own, the real SDK exporting over HTTP to a local receiver: the
    reference graph's 14 observations arrive as one trace; with the receiver refusing them, the 14 losses
    the SDK counts on its own thread, in the child, are this process's dropped events."""
    with LangfuseReceiver(mode=mode) as receiver:
        handler = langfuse_in_its_process(monkeypatch, receiver.url)
        sink = handler.pipeline.sinks[0]
        assert isinstance(sink, ProcessSink) and isinstance(sink.inner, LangfuseSink)
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        flushed = handler.flush(30)
        stats = handler.stats()
        assert sink.inner._client is None  # this process opened no SDK client: the child did
        handler.runtime.shutdown(10)
        spans = receiver.received()
    if mode == "ok":
        assert flushed and not stats["dropped"], stats
        assert len(spans) == 14 and len({s.trace_id for s in spans}) == 1
    else:
        assert not flushed
        assert stats["dropped"] == {"langfuse": 14}, stats


def test_what_a_killed_childs_sdk_still_held_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Langfuse slow to answer, the sink's process killed after its export returned: the 14 observations
    its SDK still held are counted as lost with the process, not silently gone; and while the worker
    has nothing to ask the child, ``stats()`` says so before any flush or further export."""
    with LangfuseReceiver(mode="sleep", sleep_s=30) as receiver:
        handler = langfuse_in_its_process(monkeypatch, receiver.url)
        sink = handler.pipeline.sinks[0]
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        assert wait_until(lambda: handler.stats()["exported"].get("langfuse") == 14)
        os.kill(child_pid(sink), signal.SIGKILL)
        noticed = wait_until(lambda: handler.stats()["dropped"].get("langfuse") == 14)
        idle = handler.stats()
        handler.runtime.shutdown(3)
        stats = handler.stats()
    assert noticed, idle
    assert "stopped: it ended" in idle["problems"]["langfuse"], idle["problems"]
    assert stats["dropped_reasons"] == {"langfuse": {DropReason.PROCESS_ENDED: 14}}, stats
    assert stats["exported"] == {"langfuse": 0}


def test_what_the_childs_sdk_loses_while_nothing_is_asked_shows_without_a_flush(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver refusing everything: the SDK in the child counts its 14 losses on its own thread,
    after the export that handed them over was answered. ``stats()`` shows them while the worker has
    nothing to ask the child, with no flush to carry them."""
    with LangfuseReceiver(mode="error") as receiver:
        handler = langfuse_in_its_process(monkeypatch, receiver.url)
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        shown = wait_until(lambda: handler.stats()["dropped"].get("langfuse") == 14)
        stats = handler.stats()
        handler.runtime.shutdown(10)
    assert shown, stats


def test_what_the_childs_sdk_delivered_late_is_not_counted_lost_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Langfuse answering after 2 s: the export that handed the SDK its 14 observations was answered
    while they were still in flight; they are delivered later, on the SDK's thread. The child says so
    (its heartbeat), so killing it afterwards loses nothing, and nothing is counted lost."""
    with LangfuseReceiver(mode="sleep", sleep_s=2) as receiver:
        handler = langfuse_in_its_process(monkeypatch, receiver.url)
        sink = handler.pipeline.sinks[0]
        assert isinstance(sink, ProcessSink)
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        assert wait_until(lambda: handler.stats()["exported"].get("langfuse") == 14)
        assert wait_until(lambda: len(receiver.received()) == 14)
        assert wait_until(lambda: sink.child._held == 0)  # what the parent would count lost with the child
        os.kill(child_pid(sink), signal.SIGKILL)
        assert wait_until(lambda: "stopped: it ended" in handler.stats()["problems"].get("langfuse", ""))
        stats = handler.stats()
        handler.runtime.shutdown(3)
    assert not stats["dropped"], stats
    assert stats["exported"] == {"langfuse": 14}


def test_an_idle_child_is_not_taken_for_hung(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child with nothing to do says nothing: after a quiet spell longer than the hang limit, the next
    export, slow to be answered (the child paused for half a second), goes to the same child, with no
    failed export and no restart: its silence counts from the request, not from its last word."""
    monkeypatch.setattr(sink_channel, "HUNG_S", 2.0)
    db = tmp_path / "idle.db"
    sink = sql_sink(db)
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    pid = child_pid(sink)
    time.sleep(3.0)  # idle past the (shortened) hang limit
    os.kill(pid, signal.SIGSTOP)
    threading.Timer(0.5, os.kill, (pid, signal.SIGCONT)).start()
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(60)
    stats = handler.stats()
    assert child_pid(sink) == pid and not stats["failed_exports"] and not stats["problems"], stats
    handler.shutdown()
    assert count(db, "graph_runs") == 2
