"""Spill files: typed round trip, oldest-first replay, partial failure, locking, damaged files."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from vital_callbacks.sinks.sql import spill
from vital_callbacks.sinks.sql.spill import Rows, SpillDir

fcntl = pytest.importorskip("fcntl")


def collect(into: list[Any], value: Any) -> bool:
    into.append(value)
    return True


def row(n: int, **extra: Any) -> dict[str, Any]:
    return {"run_id": f"r{n}", "started_at": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
            "total_cost": Decimal("0.000123456789"), "model": "gpt-4o ☃", "max_tokens": None, "streamed": True,
            **extra}


def test_rows_round_trip_with_their_types(tmp_path: Path) -> None:
    """Decimals, aware datetimes, None, booleans and non-ASCII text come back exactly as spilled."""
    store = SpillDir(tmp_path)
    original: Rows = {"llm_call": [row(1), row(2)], "tool_call": [{"run_id": "t1", "name": "x"}]}
    assert store.write(original) == 3
    seen: list[Rows] = []
    assert store.replay(lambda rows: collect(seen, rows)) == (3, True)
    assert seen == [original]
    assert store.pending() == []


def test_files_replay_oldest_first_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    """Replay goes in write order; when the database fails again, that file and the newer ones stay."""
    store = SpillDir(tmp_path)
    for n in range(5):
        store.write({"llm_call": [row(n)]})
    order: list[str] = []

    def write(rows: Rows) -> bool:
        run_id = rows["llm_call"][0]["run_id"]
        if run_id == "r3":
            return False
        order.append(run_id)
        return True

    assert store.replay(write) == (3, False)
    assert order == ["r0", "r1", "r2"]
    assert store.pending_rows() == 2
    assert store.replay(lambda rows: True) == (2, True)


def test_concurrent_writers_never_share_a_file(tmp_path: Path) -> None:
    """Spills from the pipeline's two threads (and other processes) land in distinct, complete files."""
    store = SpillDir(tmp_path)

    def spill_many(t: int) -> None:
        for n in range(50):
            store.write({"llm_call": [row(t * 1000 + n)]})

    threads = [threading.Thread(target=spill_many, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.pending()) == 400
    assert store.pending_rows() == 400


def test_a_file_locked_by_another_replayer_is_skipped(tmp_path: Path) -> None:
    """Two processes sharing a folder never replay the same file at the same time."""
    store = SpillDir(tmp_path)
    store.write({"llm_call": [row(1)]})
    store.write({"llm_call": [row(2)]})
    locked = store.pending()[0]
    with locked.open() as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        seen: list[str] = []
        assert store.replay(lambda rows: collect(seen, rows["llm_call"][0]["run_id"])) == (1, True)
    assert seen == ["r2"]
    assert store.pending() == [locked]


def test_damaged_lines_are_skipped_and_foreign_files_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A torn line costs only that row; a file of an unknown format is renamed aside, never deleted."""
    store = SpillDir(tmp_path)
    store.write({"llm_call": [row(1), row(2)]})
    path = store.pending()[0]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:20], lines[2]]) + "\n")
    foreign = tmp_path / "00000000000000000000-1-000000-1.jsonl"
    foreign.write_text('{"format": "something-else"}\n{}\n')
    seen: list[Rows] = []
    assert store.replay(lambda rows: collect(seen, rows)) == (1, True)
    assert [r["run_id"] for r in seen[0]["llm_call"]] == ["r2"]
    assert foreign.with_suffix(".unreadable").exists()
    assert "damaged" in caplog.text


def test_unwritable_folder_saves_nothing_and_says_so(tmp_path: Path) -> None:
    """When the disk refuses, ``write`` reports 0 saved so the pipeline counts the rows as lost."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert SpillDir(blocker / "spill").write({"llm_call": [row(1)]}) == 0


def test_default_folder_is_per_database_and_ignores_the_password(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """Spills go under the user's cache dir, one folder per database URL (hashed after masking)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    a = spill.default_spill_dir("postgresql+asyncpg://app:***@db:5432/prod")
    b = spill.default_spill_dir("postgresql+asyncpg://app:***@db:5432/staging")
    assert a.parent == tmp_path / "vital-callbacks" / "spill"
    assert a != b


def test_a_large_export_is_spilled_in_pieces_and_a_full_disk_loses_one(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """600 rows go into pieces of PIECE_ROWS; when the disk refuses the second piece, the first and
    third are kept, and the count says exactly what was saved."""
    store = SpillDir(tmp_path)
    rows: Rows = {"llm_call": [row(n) for n in range(600)]}
    real = Path.write_text
    calls = {"n": 0}

    def full_disk_once(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_once)
    saved = store.write(rows)
    monkeypatch.undo()
    assert saved == 600 - spill.PIECE_ROWS
    assert len(store.pending()) == 2 and store.pending_rows() == saved
    seen: list[Rows] = []
    assert store.replay(lambda r: collect(seen, r)) == (saved, True)
    run_ids = [r["run_id"] for piece in seen for r in piece["llm_call"]]
    assert run_ids == [f"r{n}" for n in range(600) if not spill.PIECE_ROWS <= n < 2 * spill.PIECE_ROWS]


def test_an_entry_that_cannot_be_opened_is_skipped_and_never_blocks_replay(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A directory named like a spill file (or one that EACCES / EIO refuse) is logged once and skipped;
    the files around it replay, and the folder counts as replayed."""
    store = SpillDir(tmp_path)
    store.write({"llm_call": [row(1)]})
    (tmp_path / "00000000000000000000-1-000000-5.jsonl").mkdir()  # sorts first
    store.write({"llm_call": [row(2)]})
    seen: list[Rows] = []
    with caplog.at_level("ERROR", logger="vital_callbacks"):
        assert store.replay(lambda r: collect(seen, r)) == (2, True)
        assert store.replay(lambda r: collect(seen, r)) == (0, True)
    assert [piece["llm_call"][0]["run_id"] for piece in seen] == ["r1", "r2"]
    assert len([r for r in caplog.records if "cannot be opened" in r.getMessage()]) == 1
