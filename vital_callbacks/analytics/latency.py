"""Reliability: success rate and p50 / p95 / p99 latency of LLM calls, node runs, graph runs or tool calls.

PostgreSQL computes the percentiles itself (``percentile_cont``), so only one row per group crosses
the wire. SQLite has no percentile function: there the durations of the window are streamed in key
order and interpolated here with the same definition, so both stores give the same numbers.
An ``interrupted`` run (a LangGraph interrupt waiting for a human) is neither a success nor an error:
``success_rate`` is successes over the runs that finished either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Table, case, func, select
from sqlalchemy.engine import Engine

from vital_callbacks.analytics._common import (
    GRAPH_RUNS,
    LLM_CALLS,
    NODE_RUNS,
    TOOL_CALLS,
    dimension,
    dimensions,
    key_label,
    key_text,
    percentile,
    window,
)

Source = Literal["llm", "node", "graph", "tool"]
_TABLES: dict[str, Table] = {"llm": LLM_CALLS, "node": NODE_RUNS, "graph": GRAPH_RUNS, "tool": TOOL_CALLS}
_QUANTILES = (0.50, 0.95, 0.99)


@dataclass(frozen=True)
class LatencyGroup:
    """Outcomes and latency (seconds) of the runs of one group."""

    dims: tuple[str, ...]
    keys: tuple[str | None, ...]
    runs: int
    successes: int
    errors: int
    interrupted: int
    success_rate: float | None
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @property
    def key(self) -> str | None:
        """The group's key as one text (see ``key_label``)."""
        return key_label(self.dims, self.keys)


def _group(dims: tuple[str, ...], keys: tuple[str | None, ...], counts: Sequence[Any], mean: Any,
           quantiles: Sequence[float | None]) -> LatencyGroup:
    runs, successes, errors = int(counts[0] or 0), int(counts[1] or 0), int(counts[2] or 0)
    finished = successes + errors
    return LatencyGroup(dims, keys, runs, successes, errors, runs - finished,
                        successes / finished if finished else None, None if mean is None else float(mean),
                        *quantiles)


def latency_rows(engine: Engine, by: str | Sequence[str] = "model", *, source: Source = "llm",
                 since: datetime | None = None, until: datetime | None = None, tenant_id: str | None = None,
                 graph: str | None = None) -> list[LatencyGroup]:
    """Success rate and latency percentiles of ``source`` runs (``llm`` calls, ``node`` runs, ``graph``
    runs or ``tool`` calls) grouped by ``by``, slowest p95 first."""
    table = _TABLES.get(source)
    if table is None:
        raise ValueError(f"source must be one of {', '.join(_TABLES)}, not {source!r}")
    dims = dimensions(by)
    dialect = engine.dialect.name
    keys = [dimension(table, d, dialect) for d in dims]
    t = table.c
    counts = [func.count(), func.sum(case((t.status == "success", 1), else_=0)),
              func.sum(case((t.status == "error", 1), else_=0))]
    conditions = window(table, since=since, until=until, tenant_id=tenant_id, graph=graph)
    if source == "graph":
        conditions.append(t.parent_run_id.is_(None))  # a subgraph's run is part of its parent's
    out: list[LatencyGroup] = []
    with engine.connect() as conn:
        if dialect == "postgresql":
            quantiles = [func.percentile_cont(q).within_group(t.duration_s) for q in _QUANTILES]
            stmt = select(*keys, *counts, func.avg(t.duration_s), *quantiles).where(*conditions)
            if keys:
                stmt = stmt.group_by(*keys)
            n = len(keys)
            for row in conn.execute(stmt):
                out.append(_group(dims, tuple(key_text(v) for v in row[:n]), row[n:n + 3], row[n + 3],
                                  [None if v is None else float(v) for v in row[n + 4:]]))
        else:
            totals = select(*keys, *counts, func.avg(t.duration_s)).where(*conditions)
            durations = select(*keys, t.duration_s).where(*conditions).order_by(*keys, t.duration_s)
            if keys:
                totals = totals.group_by(*keys)
            n = len(keys)
            by_key: dict[tuple[str | None, ...], list[float]] = {}
            for row in conn.execute(durations):
                by_key.setdefault(tuple(key_text(v) for v in row[:n]), []).append(float(row[n] or 0.0))
            for row in conn.execute(totals):
                group_keys = tuple(key_text(v) for v in row[:n])
                values = by_key.get(group_keys, [])
                out.append(_group(dims, group_keys, row[n:n + 3], row[n + 3],
                                  [percentile(values, q) for q in _QUANTILES]))
    if dims and dims[0] in ("day", "hour"):
        out.sort(key=lambda g: tuple(k or "" for k in g.keys))
    else:
        out.sort(key=lambda g: (-(g.p95_s or 0.0), tuple(k or "" for k in g.keys)))
    return [g for g in out if g.runs or not dims]


def latency_by_model_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                          tenant_id: str | None = None, graph: str | None = None) -> list[LatencyGroup]:
    """Success rate and latency of LLM calls per model."""
    return latency_rows(engine, "model", source="llm", since=since, until=until, tenant_id=tenant_id, graph=graph)


def latency_by_node_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                         tenant_id: str | None = None, graph: str | None = None) -> list[LatencyGroup]:
    """Success rate and latency of LangGraph node runs per (graph, node)."""
    return latency_rows(engine, ("graph", "node"), source="node", since=since, until=until, tenant_id=tenant_id,
                        graph=graph)


def agent_success_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                       tenant_id: str | None = None, graph: str | None = None) -> list[LatencyGroup]:
    """Success rate and latency of whole graph runs per agent (graph)."""
    return latency_rows(engine, "graph", source="graph", since=since, until=until, tenant_id=tenant_id, graph=graph)


def latency_by_tool_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                         tenant_id: str | None = None, graph: str | None = None) -> list[LatencyGroup]:
    """Calls, success rate and latency of tool calls per tool name. A tool has no token cost of its own;
    the LLM calls around it are in the cost of the node that ran it."""
    return latency_rows(engine, "tool", source="tool", since=since, until=until, tenant_id=tenant_id, graph=graph)
