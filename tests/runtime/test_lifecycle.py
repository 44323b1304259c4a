"""The runtime owns the lifecycle: handlers are views, fork and exit deliver, nothing leaks per request."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages.ai import UsageMetadata
from sqlalchemy import create_engine, text

from tests.graphs import INPUT, build_graph
from vital_callbacks import Budget, InMemorySink, Runtime, Settings, VitalCallbackHandler
from vital_callbacks.runtime import default_runtime
from vital_callbacks.runtime.journal import waiting_events
from vital_callbacks.sinks.sql.spill import SpillDir
from vital_callbacks.testing.fakes import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[2]
USAGE = UsageMetadata(input_tokens=10, output_tokens=5, total_tokens=15)


def model() -> ScriptedChatModel:
    return ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"], usage=USAGE)


def sql_settings(path: Path, **extra: Any) -> Settings:
    return Settings(database_url=f"sqlite:///{path}", sinks=["sql"], flush_interval_s=0.05, **extra)


def count(path: Path, sql: str) -> int:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


SCRIPT_PREAMBLE = """
from langchain_core.messages.ai import UsageMetadata
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.testing.fakes import ScriptedChatModel

usage = UsageMetadata(input_tokens=10, output_tokens=5, total_tokens=15)
llm = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"], usage=usage)
"""


def run_script(source: str, *, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``source`` in a fresh interpreter at the project root, after ``SCRIPT_PREAMBLE`` (``llm``, a
    model reporting usage, and the names to build a handler); its stderr is returned, and it must exit 0."""
    script = SCRIPT_PREAMBLE + textwrap.dedent(source)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_handler_leaving_its_with_block_does_not_stop_the_others(tmp_path: Path) -> None:
    """Two handlers with equal settings; one used as a context manager and exited: the other still delivers."""
    db = tmp_path / "v.db"
    settings = sql_settings(db)
    other = VitalCallbackHandler(settings)
    with VitalCallbackHandler(settings) as first:
        build_graph().invoke(INPUT, config={"callbacks": [first]})
    assert first.runtime is other.runtime
    build_graph().invoke(INPUT, config={"callbacks": [other]})
    assert other.flush()
    stats = other.stats()
    assert not stats["dropped"] and not stats["problems"]
    assert count(db, "SELECT COUNT(*) FROM graph_runs") == 2
    assert count(db, "SELECT COUNT(*) FROM llm_calls") == 4


def test_concurrent_per_request_handlers_store_every_call(tmp_path: Path) -> None:
    """20 concurrent requests, each with its own handler in a ``with`` block, 50 calls each: 1,000 rows."""
    db = tmp_path / "v.db"
    settings = sql_settings(db)
    llm = model()

    def request(n: int) -> None:
        with VitalCallbackHandler(settings, tenant_id=f"t{n}") as handler:
            for _ in range(50):
                llm.invoke("hi", config={"callbacks": [handler]})

    threads = [threading.Thread(target=request, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert VitalCallbackHandler(settings).flush()
    assert count(db, "SELECT COUNT(*) FROM llm_calls") == 1000
    assert count(db, "SELECT COUNT(DISTINCT tenant_id) FROM llm_calls") == 20


def test_handlers_per_request_add_no_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 handlers built per request (from env; with a tenant; with ``budgets=``): thread count unchanged."""
    monkeypatch.setenv("VITAL_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    budget = Budget(scope="tenant", amount_usd=Decimal(5), action="stop")
    VitalCallbackHandler(budgets=[budget])  # the runtime (and its budget thread) is built once
    before = threading.active_count()
    for n in range(1000):
        VitalCallbackHandler()
        VitalCallbackHandler(tenant_id=f"t{n}")
        VitalCallbackHandler(budgets=[budget])
    assert threading.active_count() == before
    assert len(default_runtime().budgets.budgets) == 1


def test_budgets_given_in_code_apply_to_their_handler_only() -> None:
    """A stop budget passed to one handler stops that handler's calls, not those of another view."""
    memory = InMemorySink()
    runtime = Runtime(Settings(flush_interval_s=0.05), sinks=[memory])
    stop_all = Budget(scope="global", amount_usd=Decimal("0.000001"), action="stop")
    limited = VitalCallbackHandler(runtime=runtime, budgets=[stop_all])
    free = VitalCallbackHandler(runtime=runtime)
    llm = model()
    from vital_callbacks import BudgetExceeded

    with pytest.raises(BudgetExceeded):  # its worst case alone is over the limit: refused before it is made
        llm.invoke("hi", config={"callbacks": [limited]})
    assert llm.invoke("hi", config={"callbacks": [free]}).content == "ok"
    runtime.shutdown()


def test_a_forked_child_delivers_its_calls_and_the_parent_its_own(tmp_path: Path) -> None:
    """A handler built, then ``os.fork()``: the child's 500 calls stored after it exits, the parent's too, once each."""
    db = tmp_path / "fork.db"
    run_script(f"""
        import os, sys
        handler = VitalCallbackHandler(Settings(database_url="sqlite:///{db}", sinks=["sql"]))
        for _ in range(20):  # queued in the parent before the fork: the parent's to deliver
            llm.invoke("before", config={{"callbacks": [handler], "metadata": {{"tenant_id": "parent"}}}})
        pid = os.fork()
        who = "child" if pid == 0 else "parent"
        for _ in range(500):
            llm.invoke("hi", config={{"callbacks": [handler], "metadata": {{"tenant_id": who}}}})
        if pid == 0:
            sys.exit(0)  # a normal exit, without an explicit flush
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
    """)
    assert count(db, "SELECT COUNT(*) FROM llm_calls WHERE tenant_id = 'child'") == 500
    assert count(db, "SELECT COUNT(*) FROM llm_calls WHERE tenant_id = 'parent'") == 520
    assert count(db, "SELECT COUNT(DISTINCT run_id) FROM llm_calls") == 1020


def test_a_multiprocessing_child_delivers_before_it_exits(tmp_path: Path) -> None:
    """A ``multiprocessing`` fork child ends with ``os._exit`` (no atexit): its calls are still all stored."""
    db = tmp_path / "mp.db"
    run_script(f"""
        import multiprocessing
        handler = VitalCallbackHandler(Settings(database_url="sqlite:///{db}", sinks=["sql"]))

        def work(n):
            for _ in range(200):
                llm.invoke("hi", config={{"callbacks": [handler], "metadata": {{"tenant_id": f"w{{n}}"}}}})

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            procs = [ctx.Process(target=work, args=(n,)) for n in range(3)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
                assert p.exitcode == 0
    """)
    assert count(db, "SELECT COUNT(*) FROM llm_calls") == 600


def test_spans_reach_an_otel_provider_configured_after_import_at_exit(tmp_path: Path) -> None:
    """Import, then an OTel SDK provider with a file-backed batch exporter, a graph run, exit without a flush:
    every span is in the file (our exit hook runs before the provider's)."""
    out = tmp_path / "spans.jsonl"
    run_script(f"""
        import json
        import vital_callbacks
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class FileExporter(SpanExporter):
            def export(self, spans):
                with open({str(out)!r}, "a") as f:
                    for span in spans:
                        f.write(json.dumps({{"name": span.name}}) + "\\n")
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(FileExporter(), schedule_delay_millis=60_000))
        trace.set_tracer_provider(provider)

        from tests.graphs import INPUT, build_graph
        handler = vital_callbacks.VitalCallbackHandler(sinks=["otel"])
        build_graph().invoke(INPUT, config={{"callbacks": [handler]}})
    """)
    names = [line for line in out.read_text().splitlines() if line]
    # graph run, 5 nodes (retrieve, plan, 3 research, summarize) ... every event of the reference graph
    memory = InMemorySink()
    reference = VitalCallbackHandler(Settings(), sinks=[memory])
    build_graph().invoke(INPUT, config={"callbacks": [reference]})
    assert reference.flush()
    reference.shutdown()
    assert len(names) == len(memory.events) > 10


def test_exit_with_the_store_refusing_connections_spills_without_retrying(tmp_path: Path) -> None:
    """At shutdown a failing sink gets no new retries: its backlog goes straight to its spill."""
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/none", sinks=["sql"], spill_dir=tmp_path,
                        flush_interval_s=0.05, max_retries=5, retry_backoff_s=0.2)
    handler = VitalCallbackHandler(settings)
    llm = model()
    for _ in range(50):
        llm.invoke("hi", config={"callbacks": [handler]})
    handler.runtime.shutdown(30)  # False: the rows wait in the spill folder, not in the store
    stats = handler.stats()
    assert stats["spilled"]["sql"] == 50 and not stats["dropped"]
    assert stats["failed_exports"]["sql"] <= 2  # not the 6 attempts of a full backoff
    assert "VITAL_DATABASE_URL=postgresql://nobody@127.0.0.1:9/none" in stats["problems"]["sql"]


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_exit_with_a_hung_store_is_bounded_by_the_shutdown_timeout(hung_server: int, tmp_path: Path,
                                                                   journal: bool) -> None:
    """A store that accepts connections and never answers cannot hold the exit: the export in hand gives up
    before ``VITAL_SHUTDOWN_TIMEOUT_S`` (2 s here, where the export alone could wait connect + 2 x statement
    timeout, 70 s), and its batch stays in the journal for the next process, or without a journal goes to
    the spill files: nothing is lost."""
    journal_dir, spill_dir = tmp_path / "journal", tmp_path / "spill"
    stderr = run_script(f"""
        handler = VitalCallbackHandler(Settings(database_url="postgresql://app@127.0.0.1:{hung_server}/db",
                                                sinks=["sql"], spill_dir={str(spill_dir)!r}, shutdown_timeout_s=2,
                                                journal={journal}, journal_dir={str(journal_dir)!r}))
        for _ in range(20):
            llm.invoke("hi", config={{"callbacks": [handler]}})
    """, timeout=30)  # a hang detector with a wide margin, not a timing assertion
    assert "not delivered" not in stderr
    if journal:
        assert "20 events for sink 'sql' stay in the journal" in stderr
        assert sum(waiting_events(d) for d in journal_dir.iterdir()) == 20
        assert SpillDir(spill_dir).pending_rows() == 0
    else:
        assert SpillDir(spill_dir).pending_rows() == 20
        assert not journal_dir.exists()


def test_a_private_runtime_dropped_without_shutdown_still_delivers_at_exit(tmp_path: Path) -> None:
    """Handlers with their own sinks, built per call and dropped (never shut down, garbage-collected):
    every call is stored at exit, because the runtime outlives the handlers that referred to it."""
    db = tmp_path / "dropped.db"
    run_script(f"""
        import gc
        from vital_callbacks.sinks.sql import SQLSink
        for _ in range(5):
            handler = VitalCallbackHandler(Settings(flush_interval_s=60), sinks=[SQLSink("sqlite:///{db}")])
            llm.invoke("hi", config={{"callbacks": [handler]}})
        del handler
        gc.collect()
    """)
    assert count(db, "SELECT COUNT(*) FROM llm_calls") == 5


def test_runs_that_never_end_are_bounded_and_counted() -> None:
    """A run whose end callback never comes (a cancelled ``ainvoke``, a callback chain cut short) is
    forgotten past ``max_open_runs`` or after ``open_run_timeout_s``, and counted; the handler keeps
    recording everything else."""
    import uuid

    from langchain_core.messages import HumanMessage

    from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
    from vital_callbacks.testing.fakes import ScriptedChatModel

    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(max_open_runs=10), sinks=[sink])
    for _ in range(50):  # starts without ends
        handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=uuid.uuid4(),
                                    metadata={"ls_provider": "openai", "ls_model_name": "gpt-4o"})
    assert handler.flush()  # the run map is the dispatcher's: counted once it has seen the starts
    stats = handler.stats()
    assert stats["open_runs"] <= 10 and stats["evicted_runs"] == 50 - stats["open_runs"]
    ScriptedChatModel(model_name="gpt-4o").invoke("hello", config={"callbacks": [handler]})
    assert handler.flush()
    assert len(sink.of(LLMCall)) == 1 and handler.stats()["handler_errors"] == 0

    aged = VitalCallbackHandler(Settings(open_run_timeout_s=1e-9), sinks=[InMemorySink()])
    for _ in range(2048):
        aged.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=uuid.uuid4(), metadata={})
    assert aged.flush()
    assert aged.stats()["open_runs"] < 1024 and aged.stats()["evicted_runs"] > 1024
    handler.shutdown()
    aged.shutdown()
