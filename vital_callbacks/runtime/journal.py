"""The durable buffer: events written to local journal segments before a sink exports them.

A sink that stores each run id once (``Sink.journal_key``: the SQL stores) gets a journal. The
dispatcher appends every batch it hands to that sink's worker (one ``write`` of one line, straight
to the file, no user-space buffer), and the worker acknowledges events once they are resolved
(exported, spilled or counted). So a ``kill -9`` loses only what the dispatcher had not processed
yet: the next process finds the segment, replays its events through the sink (the inserts are
idempotent, so events that had been delivered already count nothing twice) and deletes it.

Segments are held under an exclusive ``flock`` by the process writing them, so processes sharing a
folder (gunicorn workers, replicas on one host) replay only the segments of processes that ended.
A segment is created under a dot-name and renamed once locked, so nobody can claim it in between.
Events are encoded by :mod:`vital_callbacks.core.codec` (msgspec, C, a few µs per event), a line each batch.
The files are not fsynced: they survive the process, not a power loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from vital_callbacks.core.codec import decode, encode
from vital_callbacks.core.events import Event

logger = logging.getLogger("vital_callbacks")

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no journal (segments of live processes could be replayed)
    fcntl = None  # type: ignore[assignment]

_HEADER = b'{"format":"vital-callbacks-journal","version":1}\n'
_SUFFIX = ".journal"
SEGMENT_BYTES = 16 * 1024 * 1024
"""A segment is closed (and a new one opened) past this size, so acknowledged events free their disk."""

def default_journal_dir(root: Path, key: str) -> Path:
    """``<root>/<hash of key>``: one folder per destination (the masked database URL), so a process
    only replays events meant for where it writes."""
    return root / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class _Segment:
    path: Path
    fd: int
    end: int
    """Sequence number after the last event written to it."""
    size: int


class Journal:
    """One sink's journal: appended on the dispatcher thread, acknowledged on the sink's worker."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._segments: list[_Segment] = []
        self._appended = 0
        self._acked = 0
        self._kept = False
        self._kept_upto = 0
        """While keeping: the sequence number up to which :meth:`keep` has answered."""
        self._closed = False
        self._claimed: set[int] = set()
        """Descriptors of orphan segments being replayed (closed in a forked child, so it never holds
        their locks)."""
        self._gaps: list[list[int]] = []
        """Ranges ``[start, end)`` of sequence numbers that are in no segment (not written)."""
        self._seq = 0
        self.failed = False
        """Set once writing failed (a full disk, a read-only folder): events are then only in memory."""

    # -- the dispatcher's side ---------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> None:
        """Write ``events`` before they are queued for the sink. Never raises: a failure is logged once
        and the events go on in memory (they are delivered as without a journal)."""
        if not events:
            return
        try:
            data = encode(events)
        except Exception:
            logger.exception("vital-callbacks: %d events cannot be journaled; delivered without the journal",
                             len(events))
            data = b""
        with self._lock:
            start = self._appended
            self._appended += len(events)
            if not data or self._closed:
                self._acked_gap(start, len(events))
                return
            segment: _Segment | None = None
            try:
                segment = self._current()
                view = memoryview(data)
                while view:
                    written = os.write(segment.fd, view)
                    view = view[written:]
                segment.size += len(data)
                segment.end = self._appended
            except OSError as exc:
                if segment is not None:
                    self._cut_back(segment)
                self._acked_gap(start, len(events))
                if not self.failed:
                    self.failed = True
                    logger.error("vital-callbacks: cannot write the journal in %s (%s); events are delivered "
                                 "without it until it can be written again", self.directory, exc)
                return
            if self.failed:
                self.failed = False
                logger.info("vital-callbacks: the journal in %s is written again", self.directory)

    def _cut_back(self, segment: _Segment) -> None:
        """After a write that failed part-way (a full disk): remove its half line, so the next line is
        not glued to it; a segment that cannot be cut back is closed (the next write opens another)."""
        try:
            os.ftruncate(segment.fd, segment.size)
        except OSError:
            segment.size = self._segment_bytes  # full: never written again, removed once acknowledged

    def _acked_gap(self, start: int, count: int) -> None:
        """Events that are in no segment: remembered as a gap (so :meth:`keep` does not count them), and
        the last segment's range is stretched over them, so acknowledgements stay in step."""
        if self._gaps and self._gaps[-1][1] == start:
            self._gaps[-1][1] = start + count
        else:
            self._gaps.append([start, start + count])
        if self._segments and self._segments[-1].end == start:
            self._segments[-1].end = start + count

    def _current(self) -> _Segment:
        if self._segments and self._segments[-1].size < self._segment_bytes:
            return self._segments[-1]
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
        temp = self.directory / f".{name}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, _HEADER)
            path = self.directory / f"{name}{_SUFFIX}"
            os.replace(temp, path)  # locked before it has a name anyone replays
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        segment = _Segment(path, fd, self._appended, len(_HEADER))
        self._segments.append(segment)
        return segment

    # -- the worker's side -------------------------------------------------------------------------
    def acknowledge(self, count: int) -> None:
        """``count`` more events, in the order they were appended, are resolved (exported, spilled
        or counted as dropped): delete the segments that hold nothing else; empty the current one."""
        if count <= 0:
            return
        with self._lock:
            if self._kept:
                return
            self._acked = min(self._appended, self._acked + count)
            while self._gaps and self._gaps[0][1] <= self._acked:
                self._gaps.pop(0)
            while self._segments and self._segments[0].end <= self._acked:
                segment = self._segments[0]
                last = len(self._segments) == 1
                if last and segment.size < self._segment_bytes:
                    if segment.size > len(_HEADER):  # keep the file (and its lock) for the next events
                        try:
                            os.ftruncate(segment.fd, len(_HEADER))
                            segment.size = len(_HEADER)
                        except OSError:
                            logger.debug("vital-callbacks: truncating %s failed", segment.path, exc_info=True)
                    break
                self._segments.pop(0)
                self._remove(segment)

    def keep(self, count: int) -> list[int]:
        """Stop acknowledging: the next ``count`` unresolved events (in the order they were appended,
        continuing after those of the previous call) stay in the journal for the next process to
        replay (shutting down with a sink that is failing or hung). Returns the offsets, among those
        ``count``, of events that are *not* in the journal (a write had failed): the caller keeps
        those another way, or counts them."""
        with self._lock:
            if not self._kept:
                self._kept = True
                self._kept_upto = self._acked
            start, end = self._kept_upto, self._kept_upto + count
            self._kept_upto = end
            missing: list[int] = []
            for gap_start, gap_end in self._gaps:
                missing.extend(range(max(gap_start, start) - start, min(gap_end, end) - start))
            missing.extend(range(max(0, self._appended - start), count))  # never appended (cannot happen)
            return sorted(set(missing))

    def close(self) -> None:
        """At shutdown: delete segments that hold nothing unresolved, close every file (releasing the
        locks, so the next process may replay what is left)."""
        with self._lock:
            self._closed = True
            for segment in self._segments:
                if segment.end <= self._acked and not self._kept:
                    self._remove(segment)
                else:
                    with contextlib.suppress(OSError):
                        os.close(segment.fd)
            self._segments = []

    def after_fork(self) -> None:
        """In a forked child: the parent's segments stay the parent's (closing our copies of their
        descriptors keeps the parent's locks); the child writes its own."""
        for fd in [*(segment.fd for segment in self._segments), *self._claimed]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._lock = threading.Lock()
        self._reset()

    @staticmethod
    def _remove(segment: _Segment) -> None:
        with contextlib.suppress(OSError):
            segment.path.unlink()
        with contextlib.suppress(OSError):
            os.close(segment.fd)

    # -- replay, by the next process ---------------------------------------------------------------
    def replay(self, deliver: Callable[[list[Event]], bool], *, segments: int | None = None) -> Replayed:
        """Hand the events of each segment left by a process that ended to ``deliver``, oldest first,
        deleting the segment once ``deliver`` returns True; stop at the first False (the store is
        down, or shutting down: the segment stays for a later try), or after ``segments`` segments.
        A segment of a live process is locked by it, and skipped. Call it on the worker, never on the
        caller's thread."""
        found = Replayed()
        if fcntl is None:
            return found
        try:
            entries = sorted(self.directory.iterdir())
        except OSError:
            return found
        own = {segment.path for segment in self._segments}
        for path in entries:
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                self._remove_stale_temp(path)
                continue
            if path.suffix != _SUFFIX or path in own:
                continue
            if segments is not None and found.segments >= segments:
                found.complete = False
                return found
            with self._claim(path) as data:
                if data is None:
                    continue
                events, damaged = _read(path, data)
                if events and not deliver(events):
                    found.complete = False
                    found.blocked = True
                    return found
                with contextlib.suppress(OSError):
                    path.unlink()
                found.events += len(events)
                found.damaged += damaged
                found.segments += 1
        return found

    def _remove_stale_temp(self, path: Path) -> None:
        """A segment a process was creating when it died (between create and rename): header only."""
        with self._claim(path) as data:
            if data is not None:
                with contextlib.suppress(OSError):
                    path.unlink()

    @contextlib.contextmanager
    def _claim(self, path: Path) -> Iterator[bytes | None]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield None  # gone (replayed by another process), or not a file we can open
            return
        self._claimed.add(fd)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield None  # its process is alive, or another process is replaying it
                return
            if not path.exists():
                yield None
                return
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
            yield data
        finally:
            self._claimed.discard(fd)
            os.close(fd)


@dataclass
class Replayed:
    """What one replay found: events delivered, events in damaged lines, segments deleted."""

    events: int = 0
    damaged: int = 0
    segments: int = 0
    complete: bool = True
    """False when segments are left (delivery refused, or the number asked for was reached)."""
    blocked: bool = False
    """Delivery was refused (the store is down, or shutting down)."""


def _read(path: Path, data: bytes) -> tuple[list[Event], int]:
    """The events of a segment, and how many were in damaged lines (a write cut short by a ``kill``:
    each line starts with its event count, so a cut line is still counted)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines or lines[0] + b"\n" != _HEADER:
        logger.error("vital-callbacks: %s is not a journal this version can read; deleted", path)
        return [], 0
    events: list[Event] = []
    damaged = 0
    for line in lines[1:]:
        count, _, body = line.partition(b" ")
        try:
            decoded = decode(body)
        except (msgspec.DecodeError, KeyError, ValueError, TypeError):
            damaged += int(count) if count.isdigit() else 1
            continue
        events.extend(decoded)
    if damaged:
        logger.error("vital-callbacks: %s held %d events in damaged lines (a write cut short when its process "
                     "was killed); they are lost", path, damaged)
    return events, damaged


def waiting_events(directory: Path) -> int:
    """Events in the journal segments of ``directory`` (of live and ended processes alike), by the
    count each line starts with: what a replay would deliver."""
    total = 0
    try:
        paths = [p for p in Path(directory).iterdir() if p.suffix == _SUFFIX and not p.name.startswith(".")]
    except OSError:
        return 0
    for path in paths:
        try:
            lines = path.read_bytes().split(b"\n")[1:]
        except OSError:
            continue
        total += sum(int(count) for count, _, _ in (line.partition(b" ") for line in lines) if count.isdigit())
    return total
