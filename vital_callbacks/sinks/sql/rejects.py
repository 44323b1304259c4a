"""How the SQL sinks report rows they skip: by run id, never by value, and never a line per row.

A store that rejects every row (a schema drifted, a column too small) would otherwise write a line, or
a traceback, per event into the application's log. One traceback per kind of failure, then at most one
line per kind per interval with the count since the last one; every row is counted as dropped anyway.
"""

from __future__ import annotations

import logging

from vital_callbacks.core.events import Event
from vital_callbacks.core.throttle import LogThrottle

logger = logging.getLogger("vital_callbacks")
_throttle = LogThrottle()


def log_unbuildable(event: Event, exc: Exception) -> None:
    """An event that cannot be turned into a row (a value no column can take)."""
    if _throttle.first(("unbuildable-trace", type(exc))):
        logger.error("vital-callbacks: could not turn %s %s into a row; skipped", event.kind, event.run_id,
                     exc_info=exc)
        return
    said = _throttle.take(("unbuildable", type(exc)))
    if said:
        logger.error("vital-callbacks: could not turn %s %s into a row (%s); skipped (%d such events since the "
                     "last line)", event.kind, event.run_id, type(exc).__name__, said)


def log_rejected(store: str, kind: str, run_id: object, exc: BaseException) -> None:
    """A row the database refused for its contents."""
    said = _throttle.take(("rejected", store, kind, type(exc)))
    if said:
        logger.error("vital-callbacks: %s row %s rejected by %s: %s (%d such rows since the last line)", kind,
                     run_id, store, type(exc).__name__, said)
