"""The one interface every sink implements (modelled on OpenTelemetry's ``SpanExporter``).

A sink is small and synchronous: the pipeline owns its queue, worker thread, batching and retries,
so a sink only has to turn a batch of events into I/O. Sinks never run on the caller's thread.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from vital_callbacks.events import Event

if TYPE_CHECKING:
    from vital_callbacks.settings import Settings


class ExportResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    """Retryable: the pipeline retries the same batch with backoff. A sink that wants to drop a
    permanently bad row must do so itself (and log it), so one bad row never fails a whole batch."""


class Sink(abc.ABC):
    """Base class for sinks; third-party sinks register under the ``vital_callbacks.sinks``
    entry-point group and are selected by name in ``VITAL_SINKS``."""

    name: ClassVar[str] = "sink"
    coalesce: ClassVar[int] = 1
    """How many of the pipeline's batches one export may carry when this sink has fallen behind.

    For a sink whose cost is per export rather than per event (a database round trip, a commit),
    larger exports under load are what lets it catch up: while the pipeline's other threads keep the
    GIL busy, each network wait costs the sink up to one interpreter switch interval (5 ms) to get
    the GIL back: a 512-row ``COPY`` that takes 6 ms alone took 15-20 ms beside one CPU-bound thread,
    and ~12 ms inside the pipeline under ``benchmarks/sql_throughput.py``. Idle, exports stay at one
    batch; the queue decides."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        """Build the sink from settings; the default ignores them."""
        return cls()

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

    def shutdown(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op by default
        """Release resources; called once, after the last export."""
