"""Structured-log sink: one JSON line per event through ``logging`` (logger ``vital_callbacks.events``).

For Loki / promtail / Alloy, Fluent Bit, Vector or any shipper that reads a process's log lines; see
``integrations/loki/``. The line *is* the record's message, so a ``%(message)s`` formatter ships it
unchanged; the same fields ride on the record as ``record.vital_event`` for JSON formatters.

The schema is flat and stable (field names never depend on the event's contents, absent values are
``null``), because log queries filter on field names:

* every scalar field of the event under its own name (``run_id``, ``trace_id``, ``parent_run_id``,
  ``tenant_id``, ``user_id``, ``session_id``, ``graph``, ``node``, ``status``, ``error_type``,
  ``error_message``, ``duration_s``, ``model``, ``name``, ``step`` ...), ``tags`` as a list;
* ``kind`` (``graph_run``, ``node_run``, ``llm_call``, ``tool_call``, ``retriever_call``) and ``level``;
* ``start_time`` / ``end_time`` as ISO-8601 UTC strings (microseconds, ``+00:00``);
* token usage flattened: ``input_tokens``, ``output_tokens``, ``total_tokens``, ``cache_read_tokens``,
  ``cache_write_tokens``, ``cache_write_1h_tokens``, ``reasoning_tokens``;
* money as decimal strings (exact, never floats): ``cost_usd`` (call or graph total),
  ``input_cost_usd``, ``output_cost_usd``, ``price_source``, ``price_detail`` and ``saved_cost_usd`` for LLM calls;
  a cost is ``null`` when no price was known, never ``"0"``;
* ``unpriced`` on LLM calls: true for a call with tokens but no known price (a failed call without
  usage has nothing to price: false); ``unpriced_calls`` and ``cost_is_lower_bound`` on graph runs,
  whose ``cost_usd`` sums only the priced calls;
* content (``prompt``, ``completion``, tool ``input`` / ``output``, retriever ``query``) only with
  content capture on; the events already arrive without it otherwise.

The root logger is never touched. The sink gives ``vital_callbacks.events`` level INFO when nobody
set one (choosing the sink means wanting the lines) and, with ``VITAL_LOGS_STREAM``, its own stream
handler that does not propagate, so each line is written exactly once.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

from msgspec.structs import fields

from vital_callbacks.core.events import Cost, Event, GraphRun, LLMCall
from vital_callbacks.core.turns import taking_turns
from vital_callbacks.sinks.base import ExportResult, Sink

if TYPE_CHECKING:
    from vital_callbacks.core.settings import Settings

LOGGER_NAME = "vital_callbacks.events"
_SKIP = {"raw_input", "raw_output"}
_TIMES = {"start_time", "end_time"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="microseconds")


def _cost(cost: Cost | None) -> dict[str, str | None]:
    return {
        "cost_usd": str(cost.total) if cost else None,
        "input_cost_usd": str(cost.input) if cost else None,
        "output_cost_usd": str(cost.output) if cost else None,
        "price_source": cost.source if cost else None,
        "price_detail": cost.detail if cost else None,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def to_record(event: Event) -> dict[str, Any]:
    """The JSON object of one event (the stable field names listed in the module docstring)."""
    record: dict[str, Any] = {"kind": event.kind, "level": "error" if event.status == "error" else "info"}
    for f in fields(event):
        if f.name in _SKIP:
            continue
        value = getattr(event, f.name)
        if f.name in _TIMES:
            record[f.name] = _iso(value)
        elif f.name == "usage":
            record.update(value.columns())
        elif f.name == "cost":
            record.update(_cost(value))
        elif f.name == "saved_cost":
            record["saved_cost_usd"] = _plain(value)
        else:
            record[f.name] = _plain(value)
    if isinstance(event, LLMCall):
        record["unpriced"] = event.cost is None and event.token_source != "none"
    elif isinstance(event, GraphRun):
        record["cost_is_lower_bound"] = event.unpriced_calls > 0
    return record


class LogSink(Sink):
    """JSON lines on logger ``vital_callbacks.events``: INFO, or ERROR for failed runs."""

    name = "logs"

    def __init__(self, logger: logging.Logger | None = None, *, stream: IO[str] | None = None) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        if self.logger.level == logging.NOTSET:
            self.logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        self._propagate = self.logger.propagate
        if stream is not None:
            self._handler = logging.StreamHandler(stream)
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(self._handler)
            self.logger.propagate = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        stream = {"stdout": sys.stdout, "stderr": sys.stderr}.get(settings.logs_stream or "")
        return cls(stream=stream)

    def export(self, batch: Sequence[Event]) -> ExportResult:
        log = self.logger
        for event in taking_turns(batch):
            level = logging.ERROR if event.status == "error" else logging.INFO
            if not log.isEnabledFor(level):
                continue
            try:
                record = to_record(event)
                line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
            except Exception:
                logging.getLogger("vital_callbacks").exception(
                    "vital-callbacks: could not turn %s %s into a log line; skipped", event.kind, event.run_id)
                continue
            log.log(level, line, extra={"vital_event": record})
        return ExportResult.SUCCESS

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        for handler in self.logger.handlers:
            handler.flush()
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._handler is not None:
            self._handler.flush()
            self.logger.removeHandler(self._handler)
            self.logger.propagate = self._propagate
            self._handler = None
