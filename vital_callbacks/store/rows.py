"""THE event -> row mapping: every writer (SQLite and PostgreSQL rows, ``COPY`` tuples, spill files)
gets its values from here, so a column can never mean two things.

A :class:`RowMapping` is built once per event kind (and SQL dialect) from the table's columns: each
column is read from the event by one ``operator.attrgetter`` call in C (dotted names reach into
``usage``), then the few derived columns (costs, tags) and the text checks are applied. Text is
made storable: NUL bytes and lone surrogates removed, over-long values cut to their column (logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from math import modf
from operator import attrgetter, methodcaller
from typing import Any

from msgspec.structs import fields
from sqlalchemy import Boolean, DateTime, Numeric, String, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

from vital_callbacks.core.events import EVENT_CLASSES, Event, Score
from vital_callbacks.core.turns import EVERY, let_others_run, taking_turns
from vital_callbacks.store.schema import TABLES

logger = logging.getLogger("vital_callbacks")

Record = tuple[Any, ...]
MAX_TEXT = 1_000_000
"""Longest text an unbounded column keeps."""

_USAGE = {"input_tokens": "input", "output_tokens": "output", "total_tokens": "total",
          "cache_read_tokens": "cache_read", "cache_write_tokens": "cache_write", "reasoning_tokens": "reasoning",
          "cache_write_1h_tokens": "cache_write_1h", "input_audio_tokens": "input_audio",
          "cache_audio_read_tokens": "cache_audio_read", "output_audio_tokens": "output_audio",
          "web_searches": "web_searches"}
_COST = {"input_cost": "input", "output_cost": "output", "total_cost": "total", "price_source": "source",
         "price_detail": "detail"}
_SCORE = {"score_id": "run_id", "run_id": "parent_run_id", "created_at": "started_at"}
"""Score columns whose event field has another name."""


def clean_text(value: str, limit: int | None = None) -> str:
    """Storable text: no NUL (PostgreSQL rejects it), no lone surrogates (not UTF-8), bounded."""
    if value.isascii() and "\x00" not in value and (limit is None or len(value) <= limit):
        return value  # the common case, decided in C
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def storable_text(value: str, limit: int, kind: str, column: str) -> str:
    """:func:`clean_text`, with a warning when the value had to be cut to fit its column."""
    cleaned = clean_text(value, limit)
    if len(value) > limit and len(cleaned) < len(value):
        logger.warning("vital-callbacks: %s.%s truncated from %d to %d characters", kind, column, len(value), limit)
    return cleaned


def _tags(tags: tuple[str, ...]) -> str | None:
    return json.dumps(list(tags)) if tags else None


_EPOCH = {"started_at": "start_time", "ended_at": "end_time"}
"""The datetime columns and the epoch-float fields they are made from."""
_SQLITE_DATETIME_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def sqlite_datetime(ts: float) -> str:
    """What SQLAlchemy's SQLite ``DATETIME`` stores for the UTC time ``ts`` (``YYYY-MM-DD HH:MM:SS.ffffff``),
    formatted in C: its bind processor formats each field of a ``datetime`` in Python, two per row.
    The tests check it against that processor."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(" ", "microseconds")[:26]


def sqlite_datetimes(stamps: Iterable[float]) -> list[str]:
    """:func:`sqlite_datetime` of each of a batch's times, the date and time of day made once per
    second (a batch's events share a few seconds): what is left per value is its microseconds,
    rounded half to even from the fraction as ``datetime.fromtimestamp`` rounds them. The tests check
    it against SQLAlchemy's processor too."""
    seconds: dict[float, str] = {}
    out: list[str] = []
    for ts in stamps:
        fraction, whole = modf(ts)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            micros -= 1_000_000
            whole += 1
        elif micros < 0:
            micros += 1_000_000
            whole -= 1
        prefix = seconds.get(whole)
        if prefix is None:
            prefix = seconds[whole] = sqlite_datetime(whole)[:19]
        out.append(f"{prefix}.{micros:06d}")
    return out


_has_nul = methodcaller("__contains__", "\x00")


def _each(processor: Callable[[Any], Any]) -> Callable[[Sequence[Any]], list[Any]]:
    """A bind processor applied over a column."""
    return lambda column: list(map(processor, column))


def _stores_as_sqlite_text(impl: Any) -> bool:
    """Whether a column stores SQLAlchemy's default SQLite datetime text (what :func:`sqlite_datetime` makes)."""
    return isinstance(impl, sqlite.DATETIME) and getattr(impl, "_storage_format", None) == _SQLITE_DATETIME_FORMAT


def _limit(column: Any) -> int | None:
    if not isinstance(column.type, String):
        return None
    length = getattr(column.type, "length", None)
    return length if isinstance(length, int) else MAX_TEXT


def _default(column: Any) -> Any:
    default = column.default
    return default.arg if default is not None and default.is_scalar else None


class RowMapping:
    """Rows of one table for events of one kind: tuples in column order (``record``), dicts by column
    name (``row``), and back (``from_row``). With a ``dialect``, records also go through SQLAlchemy's
    bind processors, for a DB-API driver handed tuples directly (sqlite3)."""

    def __init__(self, kind: str, dialect: Dialect | None = None) -> None:
        self.kind = kind
        self.table: Table = TABLES[kind]
        self.columns = [c.name for c in self.table.columns]
        self.id_position = self.columns.index("score_id" if kind == Score.kind else "run_id")
        # started_at / ended_at: the events' datetime properties over their epoch-float fields
        names = {f.name for f in fields(EVENT_CLASSES[kind])} | {"started_at", "ended_at"}
        sources: list[str] = []
        self._defaults: list[tuple[int, Any]] = []
        self._costs: list[tuple[int, str]] = []
        self._tags: int | None = None
        for index, column in enumerate(self.table.columns):
            name = column.name
            if kind == Score.kind and name in _SCORE:
                sources.append(_SCORE[name])
            elif name in _USAGE and "usage" in names:
                sources.append(f"usage.{_USAGE[name]}")
            elif name in _COST and "cost" in names:
                sources.append("cost")
                self._costs.append((index, _COST[name]))
            elif name == "tags":
                sources.append("tags")
                self._tags = index
            elif name in names:
                sources.append(name)
            else:  # no event value: the column's default, as an INSERT without it would store
                sources.append("run_id")
                self._defaults.append((index, _default(column)))
        self.missing = [self.columns[i] for i, _ in self._defaults]
        """Columns the event has no value for (tests keep this empty)."""
        self._get: Callable[[Event], tuple[Any, ...]] = attrgetter(*sources)
        self._record_get = self._get
        self._text = [(i, limit, self.columns[i]) for i, c in enumerate(self.table.columns)
                      if (limit := _limit(c)) is not None]
        self._processors: list[tuple[int, Callable[[Any], Any]]] = []
        self._record_processors: list[tuple[int, Callable[[Sequence[Any]], list[Any]]]] = []
        """The same over a whole column of records (which start from the epoch floats, see below)."""
        if dialect is not None:
            fast = self._record_processors
            for index, column in enumerate(self.table.columns):
                if isinstance(column.type, (DateTime, Numeric, Boolean)):
                    impl = column.type.dialect_impl(dialect)
                    processor = impl.bind_processor(dialect)
                    if processor is not None:
                        self._processors.append((index, processor))
                    if sources[index] in _EPOCH and _stores_as_sqlite_text(impl):
                        sources[index] = _EPOCH[sources[index]]  # an event's record: the float, formatted in C
                        fast.append((index, sqlite_datetimes))
                    elif processor is not None:
                        fast.append((index, _each(processor)))
            self._record_get = attrgetter(*sources)

    def values(self, event: Event) -> list[Any]:
        """The column values in column order, as Python values (before any bind processor): the
        reference that :meth:`records` is tested against."""
        values = list(self._get(event))
        for index, default in self._defaults:
            values[index] = default
        if self._costs:
            cost = getattr(event, "cost", None)
            for index, part in self._costs:
                values[index] = None if cost is None else getattr(cost, part)
        if self._tags is not None:
            values[self._tags] = _tags(values[self._tags])
        for index, limit, column in self._text:
            values[index] = self._storable(values[index], limit, column)
        return values

    def record(self, event: Event) -> Record:
        """The row as a tuple in column order, ready for the driver."""
        return self.records((event,))[0]

    def records(self, events: Sequence[Event]) -> list[Record]:
        """:meth:`record` of each event, a column at a time: one attribute fetch per event, then each
        derived column, text check and bind processor over the whole column, mostly in C (a clean
        text column is checked by three passes of C functions, no Python call per value). The same
        records as :meth:`values` and the bind processors make per event; the tests hold them equal."""
        columns: list[Sequence[Any]] = list(zip(*map(self._record_get, events), strict=True))
        if not columns:
            return []
        for index, default in self._defaults:
            columns[index] = (default,) * len(events)
        for index, part in self._costs:
            columns[index] = [None if cost is None else getattr(cost, part) for cost in columns[index]]
        if self._tags is not None:
            columns[self._tags] = [_tags(tags) if tags else None for tags in columns[self._tags]]
        for index, limit, column in self._text:
            values = columns[index]
            present = list(filter(None, values))
            try:
                if all(map(str.isascii, present)) and not any(map(_has_nul, present)) and \
                        max(map(len, present), default=0) <= limit:
                    continue
            except TypeError:  # a value that is no text: checked one by one (and left as it is)
                pass
            columns[index] = [self._storable(value, limit, column) for value in values]
        for index, over_column in self._record_processors:
            columns[index] = over_column(columns[index])
        return list(zip(*columns, strict=True))

    def _storable(self, value: Any, limit: int, column: str) -> Any:
        if value.__class__ is str and not (value.isascii() and len(value) <= limit and "\x00" not in value):
            return storable_text(value, limit, self.kind, column)
        return value

    def row(self, event: Event) -> dict[str, Any]:
        """The row as a dict by column name (scores matched to runs, spill files, tests)."""
        return dict(zip(self.columns, self.values(event), strict=True))

    def from_row(self, row: dict[str, Any]) -> Record:
        """A row dict (spill files, matched scores) as a record."""
        return self._processed([row.get(c) for c in self.columns])

    def _processed(self, values: list[Any]) -> Record:
        for index, processor in self._processors:
            values[index] = processor(values[index])
        return tuple(values)


_MAPPINGS: dict[str, RowMapping] = {}


def mapping(kind: str) -> RowMapping:
    """The dialect-free mapping of ``kind`` (built once)."""
    found = _MAPPINGS.get(kind)
    if found is None:
        found = _MAPPINGS[kind] = RowMapping(kind)
    return found


def to_row(event: Event) -> dict[str, Any]:
    """The column values of an event's row, by column name."""
    return mapping(event.kind).row(event)


def records_by_kind(batch: Sequence[Event], mapping_of: Callable[[str], RowMapping],
                    on_error: Callable[[Event, Exception], None]) -> dict[str, list[Any]]:
    """The driver's records grouped by event kind, built a kind's events at a time
    (:meth:`RowMapping.records`); scores as row dicts (their runs are looked up first). An event
    that cannot become a row goes to ``on_error``; the other events of its kind are still built."""
    by_kind: dict[str, list[Event]] = {}
    for event in batch:
        by_kind.setdefault(event.kind, []).append(event)
    grouped: dict[str, list[Any]] = {}
    for kind, events in by_kind.items():
        out: list[Any] = []
        try:
            rows = mapping_of(kind)
            if kind == Score.kind:
                out = [rows.row(event) for event in events]
            else:
                for start in range(0, len(events), EVERY):
                    out += rows.records(events[start:start + EVERY])
                    let_others_run()
        except Exception:  # find the event that cannot be a row
            out = []
            for event in taking_turns(events):
                try:
                    rows = mapping_of(kind)
                    out.append(rows.row(event) if kind == Score.kind else rows.record(event))
                except Exception as exc:
                    on_error(event, exc)
        if out:
            grouped[kind] = out
    return grouped


def rows_by_kind(batch: Sequence[Event], on_error: Callable[[Event, Exception], None]) -> dict[str, list[Any]]:
    """Row dicts grouped by event kind; an event that cannot become a row goes to ``on_error``."""
    grouped: dict[str, list[Any]] = {}
    for event in taking_turns(batch):
        try:
            grouped.setdefault(event.kind, []).append(to_row(event))
        except Exception as exc:
            on_error(event, exc)
    return grouped


__all__ = ["MAX_TEXT", "Record", "RowMapping", "clean_text", "mapping", "records_by_kind", "rows_by_kind",
           "storable_text", "to_row"]
