"""The pipeline's account: its counters by sink, and the flush marker that travels through its stages.

Kept apart from the threads that change them: the dispatcher and every sink worker write here, and
``stats()`` reads here, under one lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class Marker:
    """A flush request: done when every stage has passed it."""

    __slots__ = ("_lock", "_pending", "done", "ok")

    def __init__(self, stages: int) -> None:
        self._pending = stages
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.ok = True
        if stages == 0:
            self.done.set()

    def arrive(self, ok: bool = True) -> None:
        with self._lock:
            self.ok = self.ok and ok
            self._pending -= 1
            if self._pending <= 0:
                self.done.set()


@dataclass
class Ledger:
    """The counters of one pipeline, by sink; changed under ``lock`` only."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    exported: dict[str, int] = field(default_factory=dict)
    spilled: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    """Events lost, by sink and reason."""
    failed_exports: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)
    """Events read back from local disk (a journal left by a process that ended, a spill file): each
    then counted as exported, spilled again or dropped, like a submitted one."""
    kept: dict[str, int] = field(default_factory=dict)
    """Of ``spilled``: events left in the journal at shutdown (a failing or hung sink), for the next
    process to replay."""

    sealed: set[str] = field(default_factory=set)
    """Sinks whose account is closed: a worker given up on at the shutdown deadline, whose events were
    counted then (a hung export that ends later must not count them again)."""

    def add(self, table: dict[str, int], sink: str, count: int) -> None:
        with self.lock:
            if sink in self.sealed:
                return
            table[sink] = table.get(sink, 0) + count

    def drop(self, sink: str, count: int, reason: str) -> None:
        with self.lock:
            if sink in self.sealed:
                return
            reasons = self.dropped.setdefault(sink, {})
            reasons[reason] = reasons.get(reason, 0) + count

    def lost(self, sink: str) -> int:
        with self.lock:
            return sum(self.dropped.get(sink, {}).values())
