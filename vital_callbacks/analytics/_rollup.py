"""Whole days from the ``llm_cost_daily`` rollup, the partial days at a window's edges from ``llm_calls``.

A 30-day cost question over a million calls would sum a million rows; with the rollup (migration
0004, kept equal to ``llm_calls`` by triggers) it sums a few hundred grouped rows plus the raw calls of
at most two partial days. The answer is the same as summing the raw rows: the rollup holds exactly
their sums per UTC day and key, and the edges are read from the raw rows themselves. Only groupings
a rollup keeps qualify (``llm_cost_daily``: day, tenant, graph, provider, model; 0010's
``llm_cost_daily_node``: day, tenant, graph, subgraph, node, tool); any other, or a store without the
rollup (a database not yet upgraded), is answered from ``llm_calls`` alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Table, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from vital_callbacks.analytics._common import utc
from vital_callbacks.store.schema import llm_cost_daily, llm_cost_daily_node

LLM_COST_DAILY: Table = llm_cost_daily
LLM_COST_DAILY_NODE: Table = llm_cost_daily_node
DIMENSIONS = {"day": "day", "tenant": "tenant_id", "graph": "graph", "provider": "provider", "model": "model"}
NODE_DIMENSIONS = {"day": "day", "tenant": "tenant_id", "graph": "graph", "subgraph": "subgraph", "node": "node",
                   "tool": "tool"}
ROLLUPS: tuple[tuple[Table, dict[str, str]], ...] = (
    (LLM_COST_DAILY, DIMENSIONS), (LLM_COST_DAILY_NODE, NODE_DIMENSIONS))
"""Each rollup and the groupings it answers (migration 0004: by model; 0010: by node and tool)."""
SUMS = tuple(c.name for c in LLM_COST_DAILY.columns if not c.primary_key)
_RECHECK_S = 60.0

_lock = threading.Lock()
_present: dict[str, tuple[bool, float]] = {}


@dataclass(frozen=True)
class Plan:
    """Whole days ``[first_day, end_day)`` from the rollup ``table`` (``None``: unbounded on that side),
    and the raw windows left over at the edges."""

    first_day: date | None
    end_day: date | None
    edges: tuple[tuple[datetime | None, datetime | None], ...]
    table: Table = field(default=LLM_COST_DAILY, compare=False)
    columns: dict[str, str] | None = field(default=None, compare=False)


def has_rollup(engine: Engine, table: Table = LLM_COST_DAILY) -> bool:
    """Whether the store has the rollup; a "no" is asked again after a minute (an upgrade may run)."""
    key = f"{engine.url}|{table.name}"
    now = time.monotonic()
    with _lock:
        known = _present.get(key)
    if known is not None and (known[0] or now - known[1] < _RECHECK_S):
        return known[0]
    present = inspect(engine).has_table(table.name)
    with _lock:
        _present[key] = (present, now)
    return present


def _rollup_for(engine: Engine, dims: Sequence[str]) -> tuple[Table, dict[str, str]] | None:
    for table, columns in ROLLUPS:
        if all(d in columns for d in dims) and has_rollup(engine, table):
            return table, columns
    return None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def plan(engine: Engine, dims: Sequence[str], since: datetime | None, until: datetime | None, *,
         tenant_id: str | None = None, graph: str | None = None) -> Plan | None:
    """How to answer a cost query over ``[since, until)`` grouped by ``dims``; ``None``: raw rows only
    (also for an empty-string tenant or graph filter, which the rollup cannot tell from a missing one)."""
    if tenant_id == "" or graph == "":
        return None
    found = _rollup_for(engine, dims)
    if found is None:
        return None
    start = utc(since) if since is not None else None
    end = utc(until) if until is not None else None
    first_day: date | None = None
    if start is not None:
        first_day = start.date() if start == _midnight(start.date()) else start.date() + timedelta(days=1)
    end_day = end.date() if end is not None else None
    if first_day is not None and end_day is not None and first_day >= end_day:
        return None  # no whole day inside the window
    edges: list[tuple[datetime | None, datetime | None]] = []
    if start is not None and first_day is not None and start < _midnight(first_day):
        edges.append((start, _midnight(first_day)))
    if end is not None and end_day is not None and _midnight(end_day) < end:
        edges.append((_midnight(end_day), end))
    return Plan(first_day, end_day, tuple(edges), found[0], found[1])


def key_column(dim: str, days: Plan | None = None) -> ColumnElement[Any]:
    table, columns = (days.table, days.columns or DIMENSIONS) if days is not None else (LLM_COST_DAILY, DIMENSIONS)
    return table.c[columns[dim]].label(dim)


def grouped_sums(engine: Engine, dims: Sequence[str], days: Plan, *, tenant_id: str | None,
                 graph: str | None) -> list[dict[str, Any]]:
    """The rollup's sums over the plan's whole days, grouped by ``dims``; keys stored as ``''`` come
    back as ``None``, as the raw rows' NULLs do."""
    t = days.table.c
    conditions = []
    if days.first_day is not None:
        conditions.append(t.day >= days.first_day)
    if days.end_day is not None:
        conditions.append(t.day < days.end_day)
    if tenant_id is not None:
        conditions.append(t.tenant_id == tenant_id)
    if graph is not None:
        conditions.append(t.graph == graph)
    keys = [key_column(d, days) for d in dims]
    stmt = select(*keys, *[func.sum(t[name]).label(name) for name in SUMS]).where(*conditions)
    if keys:
        stmt = stmt.group_by(*keys)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt)]
    for row in rows:
        for dim in dims:
            if dim != "day" and row[dim] == "":
                row[dim] = None
    return [row for row in rows if row["calls"]]  # an empty total comes back as one row of NULLs
