"""Spill files: rows the database could not take, kept on local disk and replayed oldest first.

A spill is one small JSON-lines file per undeliverable batch, written under a temporary name and
renamed into place, so a crash never leaves half a file to replay. Names start with a nanosecond
timestamp, so sorting by name is replaying oldest first, and end with the row count, so pending work
can be reported without reading the files. Replaying takes an exclusive ``flock`` on the file, so
two processes sharing a folder never replay the same file at once; the inserts are idempotent
anyway, so a file replayed twice (a crash between the insert and the delete) counts nothing twice.
Files survive a process crash; they are not fsynced, so a power loss can still lose the newest.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from vital_callbacks.core.paths import cache_root

logger = logging.getLogger("vital_callbacks")

Rows = dict[str, list[dict[str, Any]]]
"""Rows by event kind (``llm_call`` ...), as :func:`vital_callbacks.sinks.sql.to_row` makes them."""

_HEADER = {"format": "vital-callbacks-spill", "version": 1}
_SUFFIX = ".jsonl"
PIECE_ROWS = 256
"""Rows per spill file: a full disk loses at most the piece it refused."""

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; idempotent inserts keep double replays harmless
    fcntl = None  # type: ignore[assignment]


def default_spill_dir(masked_url: str) -> Path:
    """``<cache>/vital-callbacks/spill/<hash of the database URL>``: one folder per database, so a
    process only ever replays rows meant for the database it writes to. Pass the URL *masked*: the
    hash must not change when a password rotates."""
    digest = hashlib.sha256(masked_url.encode("utf-8")).hexdigest()[:16]
    return cache_root() / "vital-callbacks" / "spill" / digest


def _encode(value: object) -> object:
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    raise TypeError(f"cannot spill a {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> object:
    if len(obj) == 1:
        if "$dec" in obj:
            return Decimal(obj["$dec"])
        if "$dt" in obj:
            return datetime.fromisoformat(obj["$dt"])
    return obj


def _count_of(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


class SpillDir:
    """One folder of spill files; safe to write from several threads, and to share between processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._checked_at = 0.0
        self._maybe_pending = True  # unknown until the first look: a previous process may have left files
        self._unopenable: set[Path] = set()

    # -- writing -----------------------------------------------------------------------------------
    def write(self, rows: Rows) -> int:
        """Save rows in files of at most :data:`PIECE_ROWS` rows; returns how many were saved. Pieces,
        so a disk that fills up mid-way loses the piece it refused, not the whole export."""
        lines: list[str] = []
        for kind, kind_rows in rows.items():
            for row in kind_rows:
                try:
                    lines.append(json.dumps({"k": kind, "r": row}, default=_encode, ensure_ascii=False))
                except (TypeError, ValueError):
                    logger.exception("vital-callbacks: %s row %s cannot be spilled", kind, row.get("run_id"))
        saved = 0
        for start in range(0, len(lines), PIECE_ROWS):
            saved += self._write_piece(lines[start:start + PIECE_ROWS])
        return saved

    def _write_piece(self, lines: list[str]) -> int:
        count = len(lines)
        with self._lock:
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}-{count}"
        final = self.directory / f"{name}{_SUFFIX}"
        temp = self.directory / f".{name}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temp.write_text("\n".join([json.dumps(_HEADER), *lines]) + "\n", encoding="utf-8")
            os.replace(temp, final)
        except OSError:
            logger.exception("vital-callbacks: could not write spill file in %s", self.directory)
            with contextlib.suppress(OSError):
                temp.unlink()
            return 0
        self._maybe_pending = True
        return count

    # -- reading -----------------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        """The spill files waiting to be replayed, oldest first."""
        try:
            return sorted(p for p in self.directory.iterdir()
                          if p.suffix == _SUFFIX and not p.name.startswith(".") and p not in self._unopenable)
        except FileNotFoundError:
            return []

    def pending_rows(self) -> int:
        return sum(_count_of(p) for p in self.pending())

    def may_have_pending(self, recheck_s: float = 30.0) -> bool:
        """Cheap test for the hot path of a sink: only lists the folder every ``recheck_s`` seconds
        (to notice files another process left) or after this process wrote one."""
        now = time.monotonic()
        if not self._maybe_pending and now - self._checked_at > recheck_s:
            self._maybe_pending = True
        return self._maybe_pending

    def replay(self, write: Callable[[Rows], bool], deadline: float | None = None,
               damaged: Callable[[int], None] | None = None) -> tuple[int, bool]:
        """Hand each file's rows to ``write``, oldest first, deleting a file once ``write`` returns
        True; stop at the first False (database gone again) or at ``deadline`` (monotonic).
        Rows that cannot be read back (a damaged line, a file this version cannot read, which is moved
        aside as ``*.unreadable``) are given to ``damaged`` by count. Returns the rows replayed and
        whether the folder is now empty (of files we could lock)."""
        replayed = 0
        for path in self.pending():
            if deadline is not None and time.monotonic() > deadline:
                return replayed, False
            with self._claim(path) as handle:
                if handle is None:
                    continue  # another process is replaying it, or it is already gone
                rows, bad = self._read(path, handle)
                if rows is None:  # kept for a human (or a newer version) to look at, never deleted
                    try:
                        path.rename(path.with_suffix(".unreadable"))
                    except OSError:
                        self._unopenable.add(path)
                    if damaged is not None and bad:
                        damaged(bad)
                    continue
                if rows and not write(rows):
                    return replayed, False
                path.unlink(missing_ok=True)
                replayed += sum(len(r) for r in rows.values())
                if damaged is not None and bad:
                    damaged(bad)
        self._maybe_pending = False
        self._checked_at = time.monotonic()
        return replayed, True

    @contextlib.contextmanager
    def _claim(self, path: Path) -> Iterator[IO[str] | None]:
        try:
            handle = path.open(encoding="utf-8")
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:  # a directory named *.jsonl, EACCES, EIO: skipped, never blocks the rest
            if path not in self._unopenable:
                self._unopenable.add(path)
                logger.error("vital-callbacks: spill entry %s cannot be opened (%s); skipped", path, exc)
            yield None
            return
        with handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    yield None
                    return
            if not path.exists():  # replayed and deleted between our listing and our lock
                yield None
                return
            yield handle

    @staticmethod
    def _read(path: Path, handle: IO[str]) -> tuple[Rows | None, int]:
        """The rows of a file and how many rows could not be read; ``None`` rows for a file this
        version cannot read (its rows, by the count in its name, are the unreadable ones)."""
        rows: Rows = {}
        header = handle.readline()
        try:
            ok = json.loads(header) == _HEADER
        except ValueError:
            ok = False
        if not ok:
            logger.error("vital-callbacks: %s is not a spill file this version can read; renamed to "
                         "*.unreadable and skipped", path)
            return None, _count_of(path)
        bad = 0
        for number, line in enumerate(handle, start=2):
            try:
                item = json.loads(line, object_hook=_decode)
                rows.setdefault(item["k"], []).append(item["r"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                logger.error("vital-callbacks: %s line %d is damaged; that row is lost", path, number)
        return rows, bad
