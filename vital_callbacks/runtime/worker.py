"""One sink's bounded queue and thread: batches, exports, retries, spills, and counts every loss.

The account of each sink always balances: every event handed to a worker is exported, spilled
(kept by the sink for replay), or counted as dropped with a reason, in the pipeline's
:class:`~vital_callbacks.runtime.ledger.Ledger`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

from vital_callbacks.core.events import Event
from vital_callbacks.core.throttle import LogThrottle
from vital_callbacks.runtime.journal import Journal, Replayed
from vital_callbacks.runtime.ledger import Ledger, Marker
from vital_callbacks.sinks.base import DropReason, ExportResult, Sink

logger = logging.getLogger("vital_callbacks")
_throttle = LogThrottle()
"""One line per sink and reason per interval: a burst of drops must not flood the application's log."""

_MAX_BACKOFF_S = 10.0
_AHEAD_BATCHES = 2
"""How many batches the dispatcher may process ahead of the least busy sink; more for a sink that
exports several at once (``Sink.coalesce``), so a full export is ready."""

SHUTDOWN_FAILING = DropReason.SHUTDOWN_FAILING
SHUTDOWN_DEADLINE = DropReason.SHUTDOWN_DEADLINE
QUEUE_FULL = DropReason.QUEUE_FULL
RETRIES_EXHAUSTED = DropReason.RETRIES_EXHAUSTED
_KEEP_RESERVE_S = 1.0
"""At most this much of the shutdown timeout is kept for putting a failed export's batch on disk."""
_REPLAY_RETRY_S = 1.0
"""After a replay the store refused, the next try waits for a successful export at least this long after."""
_JOURNAL_RECHECK_S = 30.0
"""How often a worker with a journal looks for segments left by processes that ended (a sibling
worker killed by the OOM killer, say), after a successful export."""


class SinkWorker:
    """Runs one sink on its own thread, so a slow or failing sink never holds back the others."""

    def __init__(self, sink: Sink, *, queue_size: int, batch_size: int, interval_s: float,
                 max_retries: int, backoff_s: float, ledger: Ledger, room: threading.Event,
                 journal: Journal | None = None) -> None:
        self.sink = sink
        self.journal = journal
        """Where events wait on disk until they are resolved; the dispatcher does not pace itself on a
        sink that has one (its backlog is durable, the inbox's is not)."""
        self.name = sink.name
        self._room = room
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._export_size = batch_size * max(1, int(sink.coalesce))
        # Below the queue's bound, with a batch to spare: the dispatcher must be able to stop before
        # this queue overflows, or a small VITAL_QUEUE_SIZE would turn waiting into spilling.
        self.ahead_limit = min(batch_size * max(_AHEAD_BATCHES, int(sink.coalesce)),
                               max(batch_size, queue_size - batch_size))
        """The queue depth at which the dispatcher may stop for this sink."""
        self._interval_s = interval_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._ledger = ledger
        self._lost_in_export = 0
        self._in_export = False
        self._reset()

    def start(self) -> None:
        """Start the thread; the pipeline calls this after the sink is bound, so even ``prepare`` reports
        through the pipeline's context."""
        self._thread.start()

    def _reset(self) -> None:
        self.failing = False
        """Set while the sink's exports fail (retrying, spilling); cleared by the next success."""
        self._queue: deque[Event | Marker] = deque()
        self._held = 0
        """Events taken off the queue into the export being built or sent."""
        self._markers_in = 0
        self._markers_out = 0
        """Flush markers put on and taken off the queue (one writer each: the dispatcher, the worker), so
        ``pending()`` counts events only, also while a timed-out flush's marker still waits."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = threading.Event()
        """Set when the pipeline starts shutting down: a failing sink gets no new retries from then on."""
        self._deadline: float | None = None
        self._export_deadline: float | None = None
        self.busy = threading.Lock()
        """Held while the thread is inside the sink (prepare, export, spill, flush): ``fork()`` waits for
        it, so a child never inherits a lock or a half-done import from the middle of a sink call."""
        self._replay_at = 0.0
        self._replay_due = self.journal is not None
        """Segments left by ended processes may wait: replayed one per round of the loop, between
        drains (so live events never wait behind a large replay), and all before a flush completes."""
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=f"vital-sink-{self.name}", daemon=True)

    def after_fork(self, ledger: Ledger, room: threading.Event) -> None:
        """In a forked child: the parent's queue is the parent's to deliver; start afresh, counting in
        the child pipeline's ``ledger``."""
        self._ledger, self._room = ledger, room
        if self.journal is not None:
            self.journal.after_fork()
        try:
            self.sink.after_fork()
        except Exception:
            logger.exception("vital-callbacks: sink %r failed to re-initialise after fork", self.name)
        self._reset()
        self.start()

    # -- what the dispatcher and the pipeline call ---------------------------------------------------
    def depth(self) -> int:
        """Events waiting in the queue (what the dispatcher paces itself on)."""
        return len(self._queue)

    def pending(self) -> int:
        """Events not yet delivered: waiting, plus those in the export under way."""
        if self._abandoned:
            return 0  # counted when the worker was given up on
        return len(self._queue) - (self._markers_in - self._markers_out) + self._held

    def put(self, items: Sequence[Event | Marker]) -> None:
        lost: list[Event] = []
        accepted: list[Event | Marker] = []
        room = self._queue_size - len(self._queue)
        marked = False
        for item in items:
            if item.__class__ is Marker:
                self._markers_in += 1  # before the append: pending() may undercount for an instant, never over
                accepted.append(item)
                marked = True
            elif room <= 0:
                lost.append(item)  # type: ignore[arg-type]
            else:
                accepted.append(item)
                room -= 1
        if self.journal is not None:
            # Written before the worker can see them, so acknowledgements never run ahead of the file.
            self.journal.append([i for i in accepted if i.__class__ is not Marker])  # type: ignore[misc]
        self._queue.extend(accepted)
        if lost:
            self._undeliverable(lost, QUEUE_FULL, on_worker=False)
        if len(self._queue) >= self._batch_size or marked:
            self._wake.set()

    def dropped_by_sink(self, count: int, reason: str) -> None:
        """``SinkContext.dropped``: events the sink lost itself (a rejected row, its SDK's queue)."""
        if count <= 0:
            return
        self._ledger.drop(self.name, count, reason)
        if self._in_export:
            self._lost_in_export += count  # taken off this export's ``exported`` count
        else:
            self._ledger.add(self._ledger.exported, self.name, -count)  # counted as exported before
        said = _throttle.take((self.name, reason), count)
        if said:
            logger.error("vital-callbacks: %d events not delivered by sink %r (%s)", said, self.name, reason)

    def recovered_by_sink(self, delivered: int, damaged: int, reason: str) -> None:
        """``SinkContext.recovered``: events the sink read back from its own disk (spill files)."""
        if delivered > 0 or damaged > 0:
            self._ledger.add(self._ledger.recovered, self.name, max(0, delivered) + max(0, damaged))
        if delivered > 0:
            self._ledger.add(self._ledger.exported, self.name, delivered)
        if damaged > 0:
            self._ledger.drop(self.name, damaged, reason)
            said = _throttle.take((self.name, reason), damaged)
            if said:
                logger.error("vital-callbacks: %d events read back from disk by sink %r were lost (%s)", said,
                             self.name, reason)

    def begin_shutdown(self, deadline: float) -> None:
        """From now on, flushes, retries and the sink's shutdown share this deadline, and a failing
        sink's backlog goes to its spill instead of waiting for retries."""
        self._deadline = deadline
        # An export still waiting then gives up a little before the deadline, leaving the time to keep its
        # batch in the journal or the spill.
        self._export_deadline = deadline - min(_KEEP_RESERVE_S, max(0.0, deadline - time.monotonic()) / 4)
        self._closing.set()
        self._wake.set()

    def export_deadline(self) -> float | None:
        """``SinkContext.deadline``: when an export in hand must give up (while shutting down)."""
        return self._export_deadline

    def stop(self, deadline: float) -> None:
        """Deliver what is queued within ``deadline``; what a hung sink still holds then is counted."""
        self._deadline = deadline
        if self._export_deadline is None:
            self._export_deadline = deadline
        self._closing.set()
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            stuck = self.pending()
            missing = len(self.journal.keep(stuck)) if self.journal is not None and stuck else stuck
            self._kept(stuck - missing)
            if missing:
                self._ledger.drop(self.name, missing, SHUTDOWN_DEADLINE)
                logger.error("vital-callbacks: sink %r did not finish within the shutdown timeout; %d events "
                             "not delivered", self.name, missing)
            with self._ledger.lock:
                self._ledger.sealed.add(self.name)
                self._abandoned = True
            if self.journal is not None:
                self.journal.close()  # releases its locks: the next process replays what is left

    # -- the worker thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with self.busy:
                self.sink.prepare()
        except Exception as exc:
            logger.warning("vital-callbacks: sink %r could not prepare (%s: %s); it connects with the first batch",
                           self.name, type(exc).__name__, exc)
        while True:
            woken = self._wake.wait(0.0 if self._replay_due else self._interval_s)
            self._wake.clear()
            if not woken and not self._queue and not self._replay_due:
                self._idle()
            self._drain()
            if self._replay_due and not self._closing.is_set():
                self._replay_journal(segments=1)
            if self._stop.is_set():
                self._drain()
                try:
                    self.sink.shutdown(timeout_s=self._remaining(10.0))
                except Exception:
                    logger.exception("vital-callbacks: sink %r failed to shut down", self.name)
                if self.journal is not None:
                    self.journal.close()
                return

    def _idle(self) -> None:
        try:
            with self.busy:
                self.sink.idle()
        except Exception:
            logger.exception("vital-callbacks: sink %r failed between batches", self.name)

    def _drain(self) -> None:
        batch: list[Event] = []
        while self._queue:
            if self._closing.is_set() and self.failing:
                self._give_up_on_backlog(batch)
                batch = []
                continue
            item = self._queue.popleft()
            if item.__class__ is Marker:
                self._markers_out += 1
                ok = self._export(batch) if batch else True
                batch = []
                if self._replay_due and not self._closing.is_set():
                    ok = self._replay_journal() and ok  # a flush also covers what a crashed process left
                # Stopping while failing: no flush either (a sink's flush may wait out its reconnect backoff).
                item.arrive(ok and not (self._closing.is_set() and self.failing) and self._force_flush())
                continue
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= self._export_size:
                self._room.set()
                self._export(batch)
                batch = []
        self._room.set()
        if batch:
            self._export(batch)

    def _give_up_on_backlog(self, batch: list[Event]) -> int:
        """Stopping while the sink fails: no new retries. The backlog (``batch`` in hand and the queue)
        stays in the journal for the next process, or goes to the sink's spill at once (or is counted),
        so an exit with every sink refusing connections does not wait on backoffs. Returns how many
        events are lost."""
        markers: list[Marker] = []
        while self._queue:
            item = self._queue.popleft()
            if item.__class__ is Marker:
                self._markers_out += 1
                markers.append(item)
            else:
                batch.append(item)  # type: ignore[arg-type]
        lost = 0
        if batch:
            unkept = batch
            if self.journal is not None:
                missing = self.journal.keep(len(batch))
                self._kept(len(batch) - len(missing))
                unkept = [batch[i] for i in missing]
            if unkept:  # not in the journal (none, or it could not write there): the sink's spill
                lost = self._undeliverable(unkept, SHUTDOWN_FAILING)
        for marker in markers:
            marker.arrive(lost == 0)
        return lost

    def _force_flush(self) -> bool:
        try:
            with self.busy:
                return bool(self.sink.force_flush(self._remaining(10.0)))
        except Exception:
            logger.exception("vital-callbacks: sink %r failed to flush", self.name)
            return False

    def _remaining(self, default: float) -> float:
        if self._deadline is None:
            return default
        return max(0.0, self._deadline - time.monotonic())

    def _export(self, batch: list[Event]) -> bool:
        self._held = len(batch)
        try:
            return self._export_with_retries(batch)
        finally:
            self._held = 0
            if self.journal is not None:
                self.journal.acknowledge(len(batch))  # exported, spilled or counted: resolved either way

    def _attempt(self, batch: list[Event]) -> ExportResult:
        self._in_export = True
        self._lost_in_export = 0
        try:
            with self.busy:
                return self.sink.export(batch)
        except Exception:
            logger.exception("vital-callbacks: sink %r raised on export of %d events", self.name, len(batch))
            return ExportResult.FAILURE
        finally:
            self._in_export = False

    def _export_with_retries(self, batch: list[Event]) -> bool:
        delay = self._backoff_s
        for attempt in range(self._max_retries + 1):
            result = self._attempt(batch)
            if result is ExportResult.SUCCESS:
                self.failing = False
                lost, self._lost_in_export = self._lost_in_export, 0
                self._ledger.add(self._ledger.exported, self.name, len(batch) - lost)
                if self.journal is not None and not self._replay_due and time.monotonic() >= self._replay_at:
                    self._replay_due = True  # look again for segments of processes that ended since
                return lost == 0
            if not self.failing:
                self.failing = True
                self._room.set()  # the dispatcher stops waiting on a sink that cannot keep anything now
            self._ledger.add(self._ledger.failed_exports, self.name, 1)
            if attempt == self._max_retries or self._closing.is_set() or self._remaining(delay) < delay:
                break
            # Wait on the closing event so a shutdown cuts the backoff short instead of hanging.
            if self._closing.wait(delay):
                break
            delay = min(delay * 2, _MAX_BACKOFF_S)
        # Spilled in full (the sink keeps it on disk and replays it) counts as delivered for flush().
        if self._closing.is_set():
            return self._give_up_on_backlog(list(batch)) == 0
        return self._undeliverable(batch, RETRIES_EXHAUSTED) == 0

    def _kept(self, count: int) -> None:
        if count > 0:
            self._ledger.add(self._ledger.spilled, self.name, count)
            self._ledger.add(self._ledger.kept, self.name, count)
            logger.warning("vital-callbacks: %d events for sink %r stay in the journal in %s; the next process "
                           "that writes there delivers them", count, self.name, self.journal.directory
                           if self.journal is not None else "-")

    def _replay_journal(self, segments: int | None = None) -> bool:
        """Deliver journal segments of processes that ended (one attempt per piece, no retries: when
        the store is down they stay for the next look). True when none is left that could be taken."""
        if self.journal is None:
            return True
        try:
            found = self.journal.replay(self._deliver_recovered, segments=segments)
        except Exception:
            logger.exception("vital-callbacks: replaying the journal in %s failed", self.journal.directory)
            found = Replayed(complete=False, blocked=True)
        if found.blocked:  # the store is down (or we are shutting down): again after a successful export
            self._replay_due = False
            self._replay_at = time.monotonic() + _REPLAY_RETRY_S
        elif found.complete:
            self._replay_due = False
            self._replay_at = time.monotonic() + _JOURNAL_RECHECK_S
        if found.damaged:
            self._ledger.add(self._ledger.recovered, self.name, found.damaged)
            self._ledger.drop(self.name, found.damaged, DropReason.DAMAGED_JOURNAL)
        if found.segments:
            logger.warning("vital-callbacks: replayed %d journaled events (%d lost in damaged lines) into sink %r "
                           "from %d segments left by processes that ended without delivering them",
                           found.events, found.damaged, self.name, found.segments)
        return found.complete

    def _deliver_recovered(self, events: list[Event]) -> bool:
        for start in range(0, len(events), self._export_size):
            if self._closing.is_set():
                return False  # shutting down: the segment stays for the next process
            piece = events[start:start + self._export_size]
            result = self._attempt(piece)
            if result is not ExportResult.SUCCESS:
                return False  # a piece delivered already is delivered again next time: idempotent
            lost, self._lost_in_export = self._lost_in_export, 0
            self._ledger.add(self._ledger.recovered, self.name, len(piece))
            self._ledger.add(self._ledger.exported, self.name, len(piece) - lost)
        return True

    def _undeliverable(self, batch: list[Event], why: str, *, on_worker: bool = True) -> int:
        """Offer the batch to the sink's ``spill``; count and report what it could not keep. From the
        dispatcher (a full queue) it runs beside a slow export, never waiting for it."""
        saved = 0
        try:
            with self.busy if on_worker else contextlib.nullcontext():
                saved = max(0, min(len(batch), int(self.sink.spill(batch))))
        except Exception:
            logger.exception("vital-callbacks: sink %r failed to spill", self.name)
        if saved:
            self._ledger.add(self._ledger.spilled, self.name, saved)
        lost = len(batch) - saved
        if lost > 0:
            self._ledger.drop(self.name, lost, why)
            said = _throttle.take((self.name, why), lost)
            if said:
                logger.error("vital-callbacks: %d events not delivered to sink %r (%s)", said, self.name, why)
        return lost
