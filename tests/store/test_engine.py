"""The SQLite engine: ``None`` bound without sqlite3's adapter search, and bound as NULL all the same."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from vital_callbacks.store.engine import make_engine

NONE_KEY: tuple[type[Any], type[Any]] = (type(None), sqlite3.PrepareProtocol)


def test_a_sqlite_engine_registers_none_and_still_binds_null(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sqlite3.adapters, NONE_KEY, str)  # recorded, so that the test leaves it as it found it
    monkeypatch.delitem(sqlite3.adapters, NONE_KEY)
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert NONE_KEY in sqlite3.adapters
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER, b TEXT)")
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?), (?, ?)", (None, None, 1, None))
        rows = conn.execute(text("SELECT a, b, a IS NULL, typeof(b) FROM t ORDER BY rowid")).all()
    assert [tuple(r) for r in rows] == [(None, None, 1, "null"), (1, None, 0, "null")]
    engine.dispose()
    # the same through a plain connection of the application's: what it stores is unchanged
    with sqlite3.connect(":memory:") as plain:
        assert plain.execute("SELECT typeof(?)", (None,)).fetchone() == ("null",)


def test_an_adapter_for_none_the_application_registered_is_kept(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def theirs(value: None) -> str:
        return "nothing"

    monkeypatch.setitem(sqlite3.adapters, NONE_KEY, theirs)
    make_engine(f"sqlite:///{tmp_path / 'x.db'}").dispose()
    assert sqlite3.adapters[NONE_KEY] is theirs
