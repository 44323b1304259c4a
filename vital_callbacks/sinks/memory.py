"""A sink that keeps events in a list, so users can test their own instrumentation."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TypeVar

from vital_callbacks.core.events import Event
from vital_callbacks.sinks.base import ExportResult, Sink

E = TypeVar("E", bound=Event)


class InMemorySink(Sink):
    name = "memory"

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        with self._lock:
            self._events.extend(batch)
        return ExportResult.SUCCESS

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, e.g. ``sink.of(LLMCall)``."""
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
