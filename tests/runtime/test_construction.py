"""Building a handler never raises and never blocks: store problems are reported, and the workflow runs."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.graphs import INPUT, build_graph
from tests.runtime.test_lifecycle import ROOT, model
from vital_callbacks import Budget, Settings, VitalCallbackHandler
from vital_callbacks.store import migrate
from vital_callbacks.testing.servers import closed_port


def invoke_and_report(settings: Settings, caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    """Build a handler, run the reference graph; return the problem in ``stats()`` and the log text."""
    with caplog.at_level(logging.INFO, logger="vital_callbacks"):
        handler = VitalCallbackHandler(settings)
        result = build_graph().invoke(INPUT, config={"callbacks": [handler]})
        assert result["answer"] == "final answer"  # the workflow's own result, untouched
        assert not handler.flush(5)  # nothing could be stored, and flush says so
    problem = handler.stats()["problems"].get("sql", "")
    return problem, caplog.text


def quick(url: str, **extra: Any) -> Settings:
    return Settings(database_url=url, sinks=["sql"], flush_interval_s=0.05, max_retries=0, **extra)


def test_a_missing_directory_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``sqlite:///no/such/dir/v.db``: the handler builds, the problem names the URL."""
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'v.db'}"
    problem, log = invoke_and_report(quick(url), caplog)
    assert f"VITAL_DATABASE_URL={url}" in problem and "unable to open database file" in problem
    assert problem in log


def test_a_read_only_store_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store opened read-only cannot be migrated or written: reported, never raised."""
    path = tmp_path / "ro.db"
    migrate.upgrade(f"sqlite:///{path}")
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    problem, _ = invoke_and_report(quick(url), caplog)
    assert "readonly" in problem or "read-only" in problem


def test_a_store_migrated_by_a_newer_version_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A schema stamped with a revision this version does not know: reported, nothing written into it."""
    path = tmp_path / "newer.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    problem, _ = invoke_and_report(quick(url), caplog)
    assert "revision 9999" in problem and "upgrade the package" in problem



def test_an_unreachable_postgresql_is_reported_with_the_password_masked(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: the run goes on, the problem names the URL without its password."""
    url = f"postgresql://app:s3cret@127.0.0.1:{closed_port()}/db"
    problem, log = invoke_and_report(quick(url, spill_dir=tmp_path, database_connect_timeout_s=1), caplog)
    assert "postgresql://app:***@127.0.0.1" in problem and "s3cret" not in log


def test_a_hung_store_with_a_stop_budget_does_not_block_construction(hung_server: int, tmp_path: Path) -> None:
    """A stop budget's spend is read on the guard's thread: building the handler and a call return at once."""
    settings = Settings(database_url=f"postgresql://app@127.0.0.1:{hung_server}/db", sinks=["sql"],
                        spill_dir=tmp_path, database_connect_timeout_s=30, flush_interval_s=0.05)
    done = threading.Event()

    def build_and_call() -> None:
        handler = VitalCallbackHandler(settings, budgets=[Budget(scope="tenant", amount_usd=Decimal(1), action="stop")])
        model().invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
        done.set()

    threading.Thread(target=build_and_call, daemon=True).start()
    assert done.wait(20), "construction or the call waited on the hung store"


def test_concurrent_first_starts_on_one_fresh_file_never_fail(tmp_path: Path) -> None:
    """20 processes start at once on one new SQLite file: every one migrates or waits, none errors."""
    db, go = tmp_path / "fresh.db", tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, pathlib, time
        from langchain_core.messages.ai import UsageMetadata
        from vital_callbacks import Settings, VitalCallbackHandler
        from vital_callbacks.testing.fakes import ScriptedChatModel
        import vital_callbacks.sinks.sql, vital_callbacks.store.migrate  # imported before the start line
        pathlib.Path({str(tmp_path)!r}, f"ready-{{os.getpid()}}").touch()
        while not pathlib.Path({str(go)!r}).exists():  # all start at once, as replicas after a deploy
            time.sleep(0.005)
        handler = VitalCallbackHandler(Settings(database_url="sqlite:///{db}", sinks=["sql"]))
        llm = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"],
                                usage=UsageMetadata(input_tokens=1, output_tokens=1, total_tokens=2))
        llm.invoke("hi", config={{"callbacks": [handler]}})
        assert handler.flush(60), handler.stats()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    while len(list(tmp_path.glob("ready-*"))) < 20 and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    go.touch()
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for e in errors if e]
    assert not any("already exists" in e for e in errors)
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM llm_calls")).scalar_one() == 20
    engine.dispose()


def test_an_in_memory_sqlite_store_works() -> None:
    """``sqlite://`` (in memory) keeps the rows for the runtime's life, readable from another thread."""
    handler = VitalCallbackHandler(Settings(database_url="sqlite://", sinks=["sql"], flush_interval_s=0.05))
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush()
    (sink,) = handler.runtime.sinks
    with sink.engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.execute(text("SELECT COUNT(*) FROM graph_runs")).scalar_one() == 1


def test_an_unsupported_url_or_a_missing_extra_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """``mysql://`` builds a handler whose sink is unavailable: the problem is in ``stats()``, events are counted."""
    with caplog.at_level(logging.ERROR, logger="vital_callbacks"):
        handler = VitalCallbackHandler(Settings(database_url="mysql://u@h/db", sinks=["sql"], flush_interval_s=0.05))
        model().invoke("hi", config={"callbacks": [handler]})
        assert not handler.flush()
    stats = handler.stats()
    assert "mysql is not supported" in stats["problems"]["sql"]
    assert stats["dropped_reasons"]["sql"] == {"sink unavailable": 1}


def test_an_app_with_its_own_scores_table_can_use_the_package(tmp_path: Path) -> None:
    """An app that defines a SQLModel ``scores`` table imports us and builds a handler; its ``create_all``
    creates its own table only, never ours."""
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from sqlmodel import Field, SQLModel, create_engine
        class Score(SQLModel, table=True):
            __tablename__ = "scores"
            id: int = Field(primary_key=True)
            stars: int
        import vital_callbacks
        handler = vital_callbacks.VitalCallbackHandler(vital_callbacks.Settings(database_url="sqlite://"))
        engine = create_engine("sqlite:///{tmp_path / 'app.db'}")
        SQLModel.metadata.create_all(engine)
        from sqlalchemy import inspect
        assert inspect(engine).get_table_names() == ["scores"], inspect(engine).get_table_names()
        assert [c["name"] for c in inspect(engine).get_columns("scores")] == ["id", "stars"]
    """)], cwd=ROOT, check=True, timeout=120)


def test_importing_the_package_touches_no_sqlalchemy() -> None:
    """Building a handler whose sinks need no SQL (memory) imports neither SQLAlchemy nor SQLModel."""
    out = subprocess.run([sys.executable, "-c", "import sys; from vital_callbacks import InMemorySink, "
                          "VitalCallbackHandler; VitalCallbackHandler(sinks=[InMemorySink()]); "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel')))"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_a_store_problem_clears_once_the_store_is_usable(tmp_path: Path) -> None:
    """The missing folder appears later: the next export opens the store, stores the rows and the problem
    leaves ``stats()``."""
    folder = tmp_path / "later"
    handler = VitalCallbackHandler(Settings(database_url=f"sqlite:///{folder / 'v.db'}", sinks=["sql"],
                                            flush_interval_s=0.05, max_retries=50, retry_backoff_s=0.05))
    model().invoke("hi", config={"callbacks": [handler]})
    for _ in range(200):  # the worker reports the problem from its first attempt on
        if handler.stats()["problems"]:
            break
        time.sleep(0.01)
    assert "unable to open database file" in handler.stats()["problems"]["sql"]
    folder.mkdir()
    assert handler.flush(30)
    assert handler.stats()["problems"] == {} and handler.stats()["exported"]["sql"] == 1
