"""Event rows as tuples in table-column order, built by one generated function per event class.

The SQL sinks spend most of their own time turning events into rows: a dict per row, a lookup per
column, then a tuple for the driver (17 µs per LLM call). This module compiles, once per event
class and SQL dialect, a single tuple expression that reads the event's attributes in column order
(the way ``dataclasses`` and ``attrs`` generate ``__init__``), with the text checks of
:func:`~vital_callbacks.sinks.sql.to_row` inlined, so a row costs ~3 µs. Any surprise (a value that
is not what the type says) falls back, for that event only, to the generic ``to_row``; tests check
that both give the same tuple for every event class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Boolean, DateTime, Numeric, String
from sqlalchemy.engine import Dialect

from vital_callbacks import tables
from vital_callbacks.events import Event, GraphRun, LLMCall, NodeRun, RetrieverCall, Score, ToolCall
from vital_callbacks.sinks.sql import MAX_TEXT, storable_text, to_row

logger = logging.getLogger("vital_callbacks")

Record = tuple[Any, ...]

_USAGE = {"input_tokens": "input", "output_tokens": "output", "total_tokens": "total",
          "cache_read_tokens": "cache_read", "cache_write_tokens": "cache_write", "reasoning_tokens": "reasoning"}
_COST = {"input_cost": "input", "output_cost": "output", "total_cost": "total", "price_source": "source"}
_TIMES = {"started_at": "start_time", "ended_at": "end_time"}


def columns(kind: str) -> list[str]:
    return [c.name for c in tables.ROW_TYPES[kind].__table__.columns]  # type: ignore[attr-defined]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _tags(tags: tuple[str, ...]) -> str | None:
    return json.dumps(list(tags)) if tags else None


def _source(cls: type[Event], column: str) -> str | None:
    """The Python expression (over ``e``) that gives ``column`` of an event of ``cls``; ``None`` when the
    event has no such value (the column keeps its default, as with ``to_row``)."""
    names = {f.name for f in fields(cls)}
    if column in _TIMES:
        return f"_utc(e.{_TIMES[column]})"
    if column == "tags":
        return "_tags(e.tags)"
    if column in _USAGE and "usage" in names:
        return f"e.usage.{_USAGE[column]}"
    if column in _COST and "cost" in names:
        return f"(None if e.cost is None else e.cost.{_COST[column]})"
    if column in names:
        return f"e.{column}"
    return None


def compile_builder(kind: str, dialect: Dialect | None = None) -> Callable[[Event], Record]:
    """The record function for ``kind``; with ``dialect``, values also go through SQLAlchemy's bind
    processors (for a DB-API driver that is handed tuples directly, e.g. sqlite3)."""
    cls = _EVENT_CLASSES[kind]
    table = tables.ROW_TYPES[kind].__table__  # type: ignore[attr-defined]
    namespace: dict[str, Any] = {"_utc": _utc, "_tags": _tags, "_fix": storable_text}
    parts: list[str] = []
    for column in table.columns:
        expr = _source(cls, column.name) or repr(_default(column))
        if _is_text(column):
            length = getattr(column.type, "length", None)
            limit = length if isinstance(length, int) else MAX_TEXT
            # Most values are short ASCII: decided in C, no call. The rest get cleaned (and logged).
            expr = (f"(v if (v := {expr}) is None or (v.isascii() and len(v) <= {limit} and '\\x00' not in v) "
                    f"else _fix(v, {limit}, {kind!r}, {column.name!r}))")
        if dialect is not None and isinstance(column.type, (DateTime, Numeric, Boolean)):
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                name = f"_p_{column.name}"
                namespace[name] = processor
                expr = f"{name}({expr})"
        parts.append(expr)
    source = f"def record(e):\n    return ({', '.join(parts)},)\n"
    exec(compile(source, f"<vital_callbacks record {kind}>", "exec"), namespace)
    return namespace["record"]  # type: ignore[no-any-return]


def _is_text(column: Any) -> bool:
    kind = column.type
    return isinstance(kind, String) or isinstance(getattr(kind, "impl_instance", None), String)  # AutoString


def _default(column: Any) -> Any:
    default = column.default
    return default.arg if default is not None and default.is_scalar else None


_EVENT_CLASSES: dict[str, type[Event]] = {cls.kind: cls for cls in (GraphRun, NodeRun, LLMCall, ToolCall,
                                                                        RetrieverCall)}


class RecordBuilder:
    """Records for one table, fast path first, ``to_row`` for the odd event."""

    def __init__(self, kind: str, dialect: Dialect | None = None) -> None:
        self.kind = kind
        self.columns = columns(kind)
        self.id_position = self.columns.index("score_id" if kind == Score.kind else "run_id")
        self._fast = compile_builder(kind, dialect) if kind in _EVENT_CLASSES else None
        self._processors = _processors(kind, dialect) if dialect is not None else None

    def record(self, event: Event) -> Record:
        if self._fast is not None:
            try:
                return self._fast(event)
            except Exception:  # not the types the event declares: the generic path copes or says why
                logger.debug("vital-callbacks: generic row for %s %s", self.kind, event.run_id, exc_info=True)
        return self.from_row(to_row(event))

    def from_row(self, row: dict[str, Any]) -> Record:
        """A row dict (``to_row``, spill files, scores) as a record."""
        values = tuple(row.get(c) for c in self.columns)
        if self._processors is None:
            return values
        return tuple(p(v) if p is not None else v for p, v in zip(self._processors, values, strict=True))


def _processors(kind: str, dialect: Dialect) -> list[Callable[[Any], Any] | None]:
    table = tables.ROW_TYPES[kind].__table__  # type: ignore[attr-defined]
    return [c.type.dialect_impl(dialect).bind_processor(dialect) if isinstance(c.type, (DateTime, Numeric, Boolean))
            else None for c in table.columns]


def check(kind: str) -> None:
    """Fail loudly when an event class and its table drift apart (called by the tests)."""
    if kind == Score.kind:
        return
    missing = [c for c in columns(kind) if _source(_EVENT_CLASSES[kind], c) is None]
    if missing:
        raise AssertionError(f"{kind}: columns with no event value: {missing}")
