"""The inbox, the dispatcher thread and one worker per sink, between the handlers and the sinks.

Two stages, so that one slow or failing sink can never hold back the others or the caller:

* ``submit`` (caller's thread) appends to a bounded deque and returns; it never blocks or raises.
* the *dispatcher* thread runs the processor (read usage, estimate, price, budgets, roll-up, redact)
  over each item and fans the finished events out to one :class:`SinkWorker` per sink;
* each sink worker batches, exports, retries with backoff, spills, and counts what it could not deliver.

A flush is a marker that travels through both stages behind everything queued before it, so
``flush()`` returns only when every earlier event has been exported (or spilled, or counted as lost).
After ``fork()`` the child starts its own threads with empty queues (the parent delivers what it
queued), as OpenTelemetry's batch processor does: at the fork itself, and by a pid check on submit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vital_callbacks.core.events import Draft, Event
from vital_callbacks.core.turns import EVERY, let_others_run
from vital_callbacks.runtime.journal import Journal, default_journal_dir
from vital_callbacks.runtime.ledger import Ledger, Marker
from vital_callbacks.runtime.worker import SinkWorker
from vital_callbacks.sinks.base import INBOX_STAGE, DropReason, Sink, SinkContext

logger = logging.getLogger("vital_callbacks")

Item = Event | Draft | tuple[Any, ...]
"""An event, the draft of one, or a hook record (see :data:`OPENS`)."""
Processor = Callable[[Event | Draft], "Event | None"]
"""Runs on the dispatcher thread over every submitted item and returns the finished event (or
``None`` to drop it); a :class:`Draft` is built as it is when the processor fails."""

OPENS, CLOSES = 0, 1
"""The ``op`` of a hook record that opens a run and of one that closes it. A record is a tuple
``(assembler, op, *values)`` a handler's hook appended; the dispatcher calls ``assembler(record)``
for the draft (or event) it completes, if any. A full inbox refuses every record but those that
close a run (the handler counts what a refusal loses and refuses the ends and children of a run it
could not open), so the runs accepted earlier can still complete: up to twice the queue's size."""

_DISPATCH_POLL_S = 0.05
_WAKE_AT = 64
"""Records in the inbox that wake the dispatcher (a few invokes' worth): taken off soon, they die
young, before the garbage collector's first pass would promote them towards a full collection of
the application's heap."""
INBOX = INBOX_STAGE
"""The name under which losses of the shared inbox are counted (before any sink saw the event)."""


@dataclass
class PipelineStats:
    """Counters the pipeline keeps; read them with ``handler.stats()``."""

    submitted: int = 0
    exported: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    """Events that could not be delivered, by sink (``pipeline`` for the shared inbox)."""
    dropped_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    """The same, by sink and reason (``queue full``, ``rejected by the store``, ...)."""
    spilled: dict[str, int] = field(default_factory=dict)
    """Events a sink kept on local disk for replay (not lost, not yet delivered)."""
    failed_exports: dict[str, int] = field(default_factory=dict)
    processor_errors: int = 0
    queue_depth: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    """What stops a sink right now (a store it cannot open, say), by sink."""
    recovered: dict[str, int] = field(default_factory=dict)
    """Events read back from local disk (a journal left by a process that ended, spill files), by sink;
    each is then counted like a submitted one: submitted + recovered = exported + spilled + dropped +
    waiting."""
    kept: dict[str, int] = field(default_factory=dict)
    """Of ``spilled``: events left in the journal at shutdown, for the next process to deliver."""
    held: int = 0
    """Graph runs the dispatcher holds until calls that outlived them arrive (at most a minute, or
    the next flush): submitted, not yet given to any sink."""


def _journal_for(sink: Sink, root: Path | None) -> Journal | None:
    key = sink.journal_key
    if root is None or not key:
        return None
    return Journal(default_journal_dir(root, key))


class Pipeline:
    """Owns the inbox, the dispatcher thread and one worker per sink."""

    def __init__(self, sinks: Sequence[Sink], processor: Processor | None = None, *, queue_size: int = 100_000,
                 batch_size: int = 512, flush_interval_s: float = 0.25, max_retries: int = 5,
                 retry_backoff_s: float = 0.2, journal_root: Path | None = None) -> None:
        self.sinks = list(sinks)
        self.processor = processor
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._wake_at = min(batch_size, _WAKE_AT)
        self._valve = max(1, queue_size // 4)
        self._start()
        self._workers = [SinkWorker(s, queue_size=queue_size, batch_size=batch_size, interval_s=flush_interval_s,
                                    max_retries=max_retries, backoff_s=retry_backoff_s, ledger=self._ledger,
                                    room=self._room, journal=_journal_for(s, journal_root))
                         for s in self.sinks]
        for sink, worker in zip(self.sinks, self._workers, strict=True):
            sink.bind(self._context_for(worker))
            worker.start()

    def _start(self) -> None:
        """The state a process owns alone: built at start, and again in a forked child."""
        self._pid = os.getpid()
        self._ledger = Ledger()
        self._inbox: deque[Item | Marker] = deque()
        self._submitted = 0
        self._processor_errors = 0
        self._inbox_dropped = 0
        self._logged_processor_errors: set[type[BaseException]] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._room = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        """Held by the dispatcher while it processes a chunk (see :meth:`quiesce`)."""
        self._thread = threading.Thread(target=self._run, name="vital-dispatch", daemon=True)
        self._thread.start()

    def _context_for(self, worker: SinkWorker) -> SinkContext:
        name = worker.name

        def problem(message: str | None) -> None:
            with self._ledger.lock:
                if message is None:
                    self._ledger.problems.pop(name, None)
                else:
                    self._ledger.problems[name] = message

        return SinkContext(dropped=worker.dropped_by_sink, problem=problem, stats=self._stats_mapping,
                           recovered=worker.recovered_by_sink, deadline=worker.export_deadline)

    def quiesce(self, deadline: float) -> list[threading.Lock]:
        """Before ``fork()``: wait (until ``deadline``) for the dispatcher and every sink thread to be
        between two pieces of work, and hold them there, so the child inherits no lock held mid-call
        (a pool's, a module import's). The caller releases the returned locks in the parent."""
        held: list[threading.Lock] = []
        for lock in [self._busy, *(w.busy for w in self._workers)]:
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                held.append(lock)
        return held

    def after_fork(self) -> None:
        """In a forked child: fresh threads, queues and counters; every sink forgets the parent's
        connections. Safe to call twice (the pid check on submit calls it too)."""
        if self._pid == os.getpid():
            return
        closed = self._closed
        self._start()
        self._closed = closed
        reset = getattr(self.processor, "after_fork", None)
        if reset is not None:
            reset()  # runs the parent held for late calls are the parent's to deliver
        for worker in self._workers:
            worker.after_fork(self._ledger, self._room)

    # -- caller side -------------------------------------------------------------------------------
    def submit(self, item: Item) -> bool:
        """Hand an event, a draft or a hook record off; O(1), never blocks, never raises. False when
        refused (stopped, or full): a refused event is counted lost here, a refused record by the
        handler that made it (only it knows whether the run would have had a row)."""
        if self._pid != os.getpid():
            self.after_fork()
        inbox = self._inbox
        if self._closed or len(inbox) >= self._queue_size:
            if item.__class__ is not tuple:
                self.count_lost()
                return False
            if self._closed or item[1] != CLOSES or len(inbox) >= 2 * self._queue_size:
                return False
        inbox.append(item)
        depth = len(inbox)
        if depth == self._wake_at:
            self._wake.set()
        elif depth >= self._valve and not self._room.is_set():
            self._room.set()  # a quarter full: the dispatcher stops holding back (see _wait_for_room)
        return True

    def count_lost(self, count: int = 1) -> None:
        """Count events lost before the inbox (refused by it, or by a handler for a refused run)."""
        with self._ledger.lock:
            self._inbox_dropped += count

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted before this call is exported; False on timeout or loss."""
        if self._pid != os.getpid():
            self.after_fork()
        lost_before = self._lost()
        if self._closed and not self._thread.is_alive():
            return lost_before == 0
        marker = Marker(1 + len(self._workers))
        self._inbox.append(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok and self._lost() == lost_before

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Flush, stop the threads, shut the sinks down; bounded by ``timeout``. True when nothing
        was lost over the pipeline's life."""
        with self._lock:
            if self._closed:
                return self._lost() == 0
            self._closed = True
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.begin_shutdown(deadline)  # from here on, a failing sink gets no new retries
        ok = self.flush(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            worker.stop(deadline)
        lost = self._lost()
        if lost:
            logger.warning("vital-callbacks: %d events were not delivered: %s", lost, self.stats().dropped_reasons)
        return ok and not lost

    def _lost(self) -> int:
        with self._ledger.lock:
            return self._inbox_dropped + sum(sum(r.values()) for r in self._ledger.dropped.values())

    def stats(self) -> PipelineStats:
        ledger = self._ledger
        with ledger.lock:
            reasons = {sink: dict(r) for sink, r in ledger.dropped.items() if r}
            if self._inbox_dropped:
                reasons.setdefault(INBOX, {})[DropReason.INBOX] = self._inbox_dropped
            depth = {w.name: w.pending() for w in self._workers}
            depth[INBOX] = len(self._inbox)
            return PipelineStats(
                submitted=self._submitted,
                exported=dict(ledger.exported),
                dropped={sink: sum(r.values()) for sink, r in reasons.items()},
                dropped_reasons=reasons,
                spilled=dict(ledger.spilled),
                failed_exports=dict(ledger.failed_exports),
                processor_errors=self._processor_errors,
                queue_depth=depth,
                problems=dict(ledger.problems),
                recovered=dict(ledger.recovered),
                kept=dict(ledger.kept),
                held=int(getattr(self.processor, "held", 0)),
            )

    def _stats_mapping(self) -> Mapping[str, Any]:
        stats = self.stats()
        return {"dropped": stats.dropped, "dropped_reasons": stats.dropped_reasons, "queue_depth": stats.queue_depth,
                "exported": stats.exported}

    # -- dispatcher thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(_DISPATCH_POLL_S)
            self._wake.clear()
            self._dispatch()
            if self._holding():
                with self._busy:
                    out = self._released()
                    for worker in self._workers:
                        worker.put(out)
            if self._stop.is_set() and not self._inbox:
                return

    def _holding(self) -> bool:
        return bool(getattr(self.processor, "held", 0))

    def _released(self, everything: bool = False) -> list[Event | Marker]:
        """Events the processor held back (a graph run waiting for calls that outlived it) and now
        gives out: those complete or waited long enough; every one when ``everything`` (a flush)."""
        if not self._holding():
            return []
        try:
            drafts: list[Draft] = self.processor.released(everything)  # type: ignore[union-attr]
        except Exception as exc:
            self._processor_failed(exc, "held events stay held")
            return []
        out: list[Event | Marker] = []
        for draft in drafts:
            try:
                out.append(draft.build())
            except Exception as exc:
                self._processor_failed(exc, "event dropped and counted")
                with self._ledger.lock:
                    self._inbox_dropped += 1
        return out

    def _dispatch(self) -> None:
        while self._inbox:
            self._wait_for_room()
            with self._busy:
                out = self._process_chunk()
                for worker in self._workers:
                    worker.put(out)  # may spill (a full sink queue): still under ``_busy``

    def _process_chunk(self) -> list[Event | Marker]:
        out: list[Event | Marker] = []
        taken = 0
        # A run is two records (its start makes nothing): bounded by records taken as well as events made.
        while self._inbox and len(out) < self._batch_size and taken < 2 * self._batch_size:
            item = self._inbox.popleft()
            taken += 1
            if not taken % EVERY:
                let_others_run()
            if item.__class__ is Marker:
                out.extend(self._released(everything=True))  # a flush delivers what is held, as it is
                item.arrive()
                out.append(item)
                continue
            if item.__class__ is tuple:
                assembled = self._assemble(item)
                if assembled is None:
                    continue
                item = assembled
            self._submitted += 1  # counted here, on one thread, so the count is exact
            processed = self._process(item)  # type: ignore[arg-type]
            if processed is not None:
                out.append(processed)
        return out

    def _assemble(self, record: tuple[Any, ...]) -> Event | Draft | None:
        """The draft a hook record completes (its handler's assembler keeps the run tree), if any."""
        try:
            return record[0](record)  # type: ignore[no-any-return]
        except Exception as exc:
            self._processor_failed(exc, "the run's event dropped and counted" if record[1] == CLOSES else
                                   "the callback was skipped")
            if record[1] == CLOSES:
                self.count_lost()
            return None

    def _wait_for_room(self) -> None:
        """Hold off while every sink has its ``ahead_limit`` of events waiting.

        Then every sink is behind, and processing further would only move the backlog from the inbox
        (drafts: one object each) to the sink queues (finished events: an event, its usage and its
        cost), where the garbage collector keeps counting and promoting them. A slow sink alone never
        holds the others back: one sink below its limit is enough to go on. Never while stopping;
        never while a sink is failing or has a journal (its backlog is on disk, the inbox's would not
        be: a crash would lose it); and never once the inbox is a quarter full: each sink's own
        bounded queue is where events it cannot take overflow into its spill files, and the shared
        inbox, which has no spill, must not fill up in its place."""
        if not self._workers:
            return
        while not self._stop.is_set() and len(self._inbox) < self._valve:
            self._room.clear()
            if any(w.depth() < w.ahead_limit or w.failing or w.journal is not None for w in self._workers):
                return
            self._room.wait(_DISPATCH_POLL_S)

    def _process(self, item: Event | Draft) -> Event | None:
        if self.processor is not None:
            try:
                return self.processor(item)
            except Exception as exc:
                self._processor_failed(exc)
        if item.__class__ is Draft:
            try:
                return item.build()
            except Exception as exc:  # a hook captured a value its event cannot take: count the loss
                self._processor_failed(exc, "event dropped and counted")
                with self._ledger.lock:
                    self._inbox_dropped += 1
                return None
        return item  # type: ignore[return-value]

    def _processor_failed(self, exc: Exception, outcome: str = "event passed on as captured") -> None:
        with self._ledger.lock:
            self._processor_errors += 1
        if type(exc) not in self._logged_processor_errors:
            self._logged_processor_errors.add(type(exc))
            logger.error("vital-callbacks: processing an event failed; %s", outcome, exc_info=exc)
