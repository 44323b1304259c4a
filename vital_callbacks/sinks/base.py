"""The one interface every sink implements (modelled on OpenTelemetry's ``SpanExporter``).

A sink is small and synchronous: the runtime owns its queue, worker thread, batching and retries,
so a sink only has to turn a batch of events into I/O. Sinks never run on the caller's thread.
Every hook a sink may implement is declared here with its one signature; the pipeline calls them
all, and never looks for optional methods.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vital_callbacks.core.events import Event

if TYPE_CHECKING:
    from vital_callbacks.core.settings import Settings


class ExportResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    """Retryable: the pipeline retries the same batch with backoff. A sink that wants to drop a
    permanently bad row must do so itself (and report it through ``context.dropped``), so one bad
    row never fails a whole batch."""


def _ignore_dropped(count: int, reason: str) -> None:
    return None


def _ignore_problem(problem: str | None) -> None:
    return None


def _no_stats() -> Mapping[str, Any]:
    return {}


def _ignore_recovered(delivered: int, damaged: int, reason: str) -> None:
    return None


def _no_deadline() -> float | None:
    return None


INBOX_STAGE = "pipeline"
"""The name the pipeline's own inbox (before any sink) has in the delivery counters."""


class DropReason:
    """Why events were not delivered: the reasons the pipeline and our sinks give ``SinkContext.dropped``
    (a third-party sink may give its own). The Prometheus sink shows each of these at 0 for every sink
    from the start, so an alert on ``increase()`` sees a series' first drop."""

    QUEUE_FULL = "queue full"
    RETRIES_EXHAUSTED = "export failed after retries"
    SHUTDOWN_FAILING = "shut down while the sink was failing"
    SHUTDOWN_DEADLINE = "shutdown deadline passed"
    REJECTED = "rejected by the store"
    UNAVAILABLE = "sink unavailable"
    INBOX = "inbox full or closed"
    DAMAGED_SPILL = "damaged spill file"
    DAMAGED_JOURNAL = "damaged journal"
    PROCESS_ENDED = "lost with the sink's process"
    """Events a sink running in a process of its own had taken but not yet delivered (an SDK's queue)
    when that process died or had to be stopped."""

    KNOWN = (QUEUE_FULL, RETRIES_EXHAUSTED, SHUTDOWN_FAILING, SHUTDOWN_DEADLINE, REJECTED, UNAVAILABLE,
             DAMAGED_SPILL, DAMAGED_JOURNAL, PROCESS_ENDED)
    """Reasons any sink can have (``INBOX`` is the pipeline's own, before any sink)."""


@dataclass(frozen=True)
class SinkContext:
    """What a sink gets from the pipeline that runs it (given once, through :meth:`Sink.bind`), so a
    sink never calls back into the pipeline itself."""

    dropped: Callable[[int, str], None] = _ignore_dropped
    """Count events lost *after* a successful export (an SDK's own queue, a rejected row), with a reason."""
    problem: Callable[[str | None], None] = _ignore_problem
    """Report what stops the sink now (a store it cannot open, say), ``None`` once it is solved; shown
    in ``stats()["problems"]``."""
    stats: Callable[[], Mapping[str, Any]] = _no_stats
    """The delivery counters of the pipeline (what ``stats()`` returns), e.g. for a metrics collector."""
    recovered: Callable[[int, int, str], None] = _ignore_recovered
    """Count events read back from the sink's own disk (replayed spill files): ``delivered`` now, and
    ``damaged`` (unreadable, so lost, with ``reason``). They were counted as spilled when kept, so the
    account reads: submitted + recovered = exported + spilled + dropped + waiting."""
    deadline: Callable[[], float | None] = _no_deadline
    """While shutting down: the ``time.monotonic()`` by which an export in hand must give up (so the
    pipeline can still keep its batch in the journal or the spill before the shutdown deadline);
    ``None`` otherwise. A sink that can wait long (a hung database) bounds its waits with it."""


UNBOUND = SinkContext()


class Sink(abc.ABC):
    """Base class for sinks; third-party sinks register under the ``vital_callbacks.sinks``
    entry-point group and are selected by name in ``VITAL_SINKS``."""

    name: str = "sink"
    """The name in ``VITAL_SINKS``, in ``stats()`` and in metric labels (a class attribute; an instance may
    override it)."""
    coalesce: int = 1
    """How many of the pipeline's batches one export may carry when this sink has fallen behind.

    For a sink whose cost is per export rather than per event (a database round trip, a commit):
    larger exports under load are what lets it catch up, because every network wait costs it up to
    one interpreter switch interval to get the GIL back while the other threads work. Idle, exports
    stay at one batch; the queue decides."""
    context: SinkContext = UNBOUND
    joins_app_trace: bool = False
    """Whether the sink nests a trace under the application's OpenTelemetry span it ran in: the
    handler then reads that span at each trace's start (``Event.traceparent``)."""
    can_run_in_child_process: bool = False
    """Whether the sink works the same when built, from the settings, in a child process of its own
    (``VITAL_SINK_PROCESSES``): true of a sink that only writes to a destination it opens itself; false
    of one that reports into this process (a metrics registry, the application's tracer or logging)."""
    journal_key: str | None = None
    """Where this sink delivers (a masked database URL), for a sink that stores each run id once, so an
    event delivered twice counts once: the pipeline then keeps a journal for it (``VITAL_JOURNAL``),
    written before export and replayed by the next process after a crash. ``None``: no journal."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        """Build the sink from settings; the default ignores them. Must not do I/O: connecting,
        migrating and the like belong in :meth:`prepare`, on the sink's worker."""
        return cls()

    def bind(self, context: SinkContext) -> None:
        """Called once by the pipeline before the worker starts."""
        self.context = context

    def prepare(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op by default
        """Open connections before the first batch (called once, on the sink's worker thread, as it
        starts), so the first events do not wait for a connection. Failing here is only logged:
        ``export`` connects again, with retries, when the first batch comes."""

    @abc.abstractmethod
    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Deliver a batch. Raising is treated as ``FAILURE``."""

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Push out anything the sink buffers itself (e.g. an SDK's own queue)."""
        return True

    def idle(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Called on the sink's worker after each quiet interval (``VITAL_FLUSH_INTERVAL_S`` with nothing
        to export), for a sink that must look after something between batches (a child process whose
        own threads report losses, or that may end while nothing is asked of it). Raising is logged."""

    @property
    def in_flight(self) -> int:
        """Events the sink accepted (its export returned) and still holds undelivered, in a queue of its own
        (an SDK's): what would be lost if its process died now. Most sinks hold none."""
        return 0

    def spill(self, batch: Sequence[Event]) -> int:
        """Keep events the pipeline could not deliver (local files, replayed later); return how many
        were kept. The default keeps none, so they are counted as dropped."""
        return 0

    def shutdown(self, timeout_s: float = 10.0) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release resources; called once, after the last export, within ``timeout_s``."""

    def after_fork(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """In a forked child, before its first export: forget the parent's connections, event loops
        and threads (never close them: they are the parent's) so the child opens its own."""
