"""A sink run in a child process of its own (``VITAL_SINK_PROCESSES=sql,langfuse``), seen from the application.

The sink's worker thread hands each batch to the child (:mod:`vital_callbacks.runtime.sink_child`, through
:mod:`vital_callbacks.runtime.sink_channel`) and waits for its answer with the GIL let go, so turning
events into rows or spans no longer takes turns with the application's threads for it. Everything else
stays where it was: the worker's batching, retries, journal and counters see an ordinary sink whose
export succeeds, fails (and is retried) or reports dropped rows; the sink's ``spill`` runs here, on the
same files the child replays; and where no child can run, the sink itself runs here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from vital_callbacks.core.codec import pack
from vital_callbacks.core.events import Event
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime.sink_channel import ChildProcess
from vital_callbacks.runtime.sink_wire import EXPORT, FLUSH, Setup, Told
from vital_callbacks.sinks.base import ExportResult, Sink

logger = logging.getLogger("vital_callbacks")

SECRET_SETTINGS = frozenset({"api_tokens"})
"""Settings no sink reads (the HTTP API's tokens): not sent to the child."""


def child_settings(settings: Settings) -> dict[str, object]:
    """The settings as the child must read them: without secrets no sink needs, and with every path
    absolute (the child may start after the application changed its working directory)."""
    from sqlalchemy.engine import make_url  # here: importing the runtime must not import SQLAlchemy

    values = settings.model_dump(mode="json", exclude=set(SECRET_SETTINGS))
    for name, value in values.items():
        if isinstance(getattr(settings, name), Path):
            values[name] = os.path.abspath(value)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:") and not os.path.isabs(url.database):
        values["database_url"] = url.set(database=os.path.abspath(url.database)).render_as_string(hide_password=False)
    return values


class ProcessSink(Sink):
    """``inner`` (built from ``settings`` under the entry-point name ``entry_point``) run in a child
    process; ``inner`` itself serves here for what must happen here (``spill``) and as the fallback."""

    def __init__(self, inner: Sink, entry_point: str, settings: Settings) -> None:
        self.inner = inner
        self.name = inner.name
        self.coalesce = inner.coalesce
        self.journal_key = inner.journal_key
        level = logger.getEffectiveLevel()
        self._shown: str | None = None
        self._bound = False
        self.child = ChildProcess(Setup(sink=entry_point, settings=child_settings(settings), log_level=level),
                                  told=self._apply, problem=self._problem, over=self._restart_over)

    def _here(self) -> Sink:
        """``inner``, bound to this pipeline on its first use here (binding may open what it writes to,
        such as an SDK client: never for a sink that runs in its child)."""
        if not self._bound:
            self._bound = True
            self.inner.bind(self.context)
        return self.inner

    def prepare(self) -> None:
        self.child.start()
        if not self.child.usable:
            self._here().prepare()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        if not self.child.usable:
            return self._here().export(batch)
        ok = self.child.ask(EXPORT, pack(batch), self.context.deadline)
        if ok is None:
            return self._here().export(batch) if not self.child.usable else ExportResult.FAILURE
        return ExportResult.SUCCESS if ok else ExportResult.FAILURE

    def idle(self) -> None:
        """Between batches: what the child's sink reported from its own threads (an SDK's exporter
        counting losses) reaches ``stats()`` now, and a child that ended is noticed now, with what it held."""
        if self.child.usable:
            self.child.hear()
        else:
            self._here().idle()

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        if not self.child.usable:
            return self._here().force_flush(timeout_s)
        return bool(self.child.ask(FLUSH, b"", self.context.deadline, time.monotonic() + timeout_s))

    def _apply(self, told: Told) -> None:
        """What the sink told its context in the child, told to this process's."""
        for level, text in told.logs:
            logger.log(level, "%s", text)
        for count, reason in told.dropped:
            self.context.dropped(count, reason)
        for delivered, damaged, reason in told.recovered:
            self.context.recovered(delivered, damaged, reason)
        for problem in told.problem:
            self._problem(problem)

    def _problem(self, problem: str | None) -> None:
        self._shown = problem
        self.context.problem(problem)

    def _restart_over(self, message: str) -> None:
        """A new child answered: the restart notice goes, unless the store's own problem replaced it."""
        if self._shown == message:
            self._problem(None)

    def spill(self, batch: Sequence[Event]) -> int:
        return self._here().spill(batch)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        self.child.close(timeout_s)
        self.inner.shutdown(max(0.0, deadline - time.monotonic()))

    def after_fork(self) -> None:
        self.child.forget()  # the parent's process stays the parent's; this child starts its own
        self.inner.after_fork()
