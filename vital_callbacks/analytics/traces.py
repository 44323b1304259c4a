"""Traces as people browse them: recent graph runs paged by keyset, one trace's whole tree, the live tail.

A list pages by *keyset* (the last row's ``(started_at, run_id)``), never by offset: page 500 of a
million runs costs what page 1 costs, through the ``started_at`` indexes. A trace is read by its
``trace_id`` (indexed on every event table), rows from all five tables merged in start order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, inspect, or_, select
from sqlalchemy.engine import Engine

from vital_callbacks.analytics._common import GRAPH_RUNS, LLM_CALLS, NODE_RUNS, SCORES, TOOL_CALLS, utc, window
from vital_callbacks.store.schema import llm_cost_daily, retriever_calls

RETRIEVER_CALLS: Table = retriever_calls
_KINDS: tuple[tuple[str, Table], ...] = (("graph", GRAPH_RUNS), ("node", NODE_RUNS), ("llm", LLM_CALLS),
                                         ("tool", TOOL_CALLS), ("retriever", RETRIEVER_CALLS))


@dataclass(frozen=True)
class TraceSummary:
    """One graph run (a request) in a list of traces."""

    trace_id: str
    started_at: datetime
    duration_s: float
    graph: str | None
    tenant_id: str | None
    user_id: str | None
    session_id: str | None
    status: str
    error_type: str | None
    llm_calls: int
    unpriced_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None


@dataclass(frozen=True)
class Span:
    """One recorded run of a trace: a graph run, node run, LLM call, tool or retriever call."""

    kind: str
    run_id: str
    parent_run_id: str | None
    name: str
    started_at: datetime
    duration_s: float
    status: str
    error_type: str | None
    error_message: str | None
    tenant_id: str | None
    graph: str | None
    subgraph: str | None
    node: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None
    unpriced_calls: int = 0
    """Calls under it (itself, for an LLM call) with tokens but no known price, left out of ``cost_usd``."""
    model: str | None = None
    time_to_first_token_s: float | None = None
    prompt: str | None = None
    completion: str | None = None
    depth: int = 0


@dataclass(frozen=True)
class TraceScore:
    name: str
    value: float | None
    string_value: str | None
    comment: str | None
    run_id: str | None


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: list[Span]
    """In tree order: each run after its parent, siblings by start time; ``depth`` is the nesting."""
    scores: list[TraceScore] = field(default_factory=list)

    @property
    def root(self) -> Span | None:
        return self.spans[0] if self.spans else None


@dataclass(frozen=True)
class RecentCall:
    """One LLM call in the live tail."""

    run_id: str
    trace_id: str
    started_at: datetime
    tenant_id: str | None
    graph: str | None
    node: str | None
    provider: str | None
    model: str | None
    status: str
    error_type: str | None
    error_message: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    unpriced: bool
    duration_s: float


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def trace_list_rows(engine: Engine, *, tenant_id: str | None = None, user_id: str | None = None,
                    session_id: str | None = None, graph: str | None = None, status: str | None = None,
                    min_cost_usd: Decimal | None = None, since: datetime | None = None,
                    until: datetime | None = None, before: tuple[datetime, str] | None = None,
                    limit: int = 50) -> list[TraceSummary]:
    """Requests (root graph runs) newest first, filtered; ``before`` is the last row of the previous
    page (``(started_at, trace_id)``), for the next one."""
    t = GRAPH_RUNS.c
    conditions = window(GRAPH_RUNS, since=since, until=until, tenant_id=tenant_id, graph=graph)
    conditions.append(t.parent_run_id.is_(None))
    if user_id is not None:
        conditions.append(t.user_id == user_id)
    if session_id is not None:
        conditions.append(t.session_id == session_id)
    if status is not None:
        conditions.append(t.status == status)
    if min_cost_usd is not None:
        conditions.append(t.cost_usd >= min_cost_usd)
    if before is not None:
        at, run_id = utc(before[0]), before[1]
        conditions.append(or_(t.started_at < at, and_(t.started_at == at, t.run_id < run_id)))
    stmt = (select(t.run_id, t.started_at, t.duration_s, t.graph, t.tenant_id, t.user_id, t.session_id, t.status,
                   t.error_type, t.llm_calls, t.unpriced_calls, t.input_tokens, t.output_tokens, t.cost_usd)
            .where(*conditions).order_by(t.started_at.desc(), t.run_id.desc()).limit(limit))
    with engine.connect() as conn:
        return [TraceSummary(r.run_id, utc(r.started_at), float(r.duration_s or 0), r.graph, r.tenant_id, r.user_id,
                             r.session_id, r.status, r.error_type, int(r.llm_calls or 0), int(r.unpriced_calls or 0),
                             int(r.input_tokens or 0), int(r.output_tokens or 0), _decimal(r.cost_usd))
                for r in conn.execute(stmt)]


def _span(kind: str, r: Any) -> Span:
    m = r._mapping
    name = {"graph": m.get("graph") or m.get("name"), "node": m.get("node"), "llm": m.get("model"),
            "tool": m.get("name"), "retriever": m.get("name")}[kind] or kind
    cost = m.get("total_cost") if kind == "llm" else m.get("cost_usd")
    tokens = kind in ("llm", "graph", "tool")
    if kind == "llm":
        unpriced = int(cost is None and m.get("token_source") != "none")
    else:
        unpriced = int(m.get("unpriced_calls") or 0)
    return Span(kind, m["run_id"], m["parent_run_id"], str(name), utc(m["started_at"]), float(m["duration_s"] or 0),
                m["status"], m["error_type"], m["error_message"], m["tenant_id"], m["graph"], m.get("subgraph"),
                m["node"], int(m["input_tokens"] or 0) if tokens else 0, int(m["output_tokens"] or 0) if tokens else 0,
                int(m.get("cache_read_tokens") or 0), int(m.get("reasoning_tokens") or 0), _decimal(cost), unpriced,
                m.get("model"), m.get("time_to_first_token_s"), m.get("prompt"), m.get("completion"))


def _tree(spans: list[Span]) -> list[Span]:
    """Each span after its parent (depth first), siblings in start order. Whatever the rows say, every
    span is placed once: a second row with a run id already seen (rows written by two handlers, or
    loaded by hand) is left out, and a span whose parent is not stored or that sits in a loop of
    parents hangs under the root (the first graph run, else the earliest span)."""
    ordered: list[Span] = []
    seen_ids: set[str] = set()
    for span in sorted(spans, key=lambda s: (s.started_at, s.kind != "graph", s.run_id)):
        if span.run_id not in seen_ids:
            seen_ids.add(span.run_id)
            ordered.append(span)
    if not ordered:
        return []
    root = next((s for s in ordered if s.kind == "graph" and s.parent_run_id not in seen_ids), ordered[0])
    children: dict[str, list[Span]] = {}
    for span in ordered:
        if span is not root:
            parent = span.parent_run_id if span.parent_run_id in seen_ids else root.run_id
            children.setdefault(parent, []).append(span)
    out: list[Span] = []
    placed: set[str] = set()
    stack = [(root, 0)]
    while True:
        while stack:
            span, depth = stack.pop()
            if span.run_id in placed:
                continue
            placed.add(span.run_id)
            out.append(Span(**{**span.__dict__, "depth": depth}))
            stack.extend((c, depth + 1) for c in reversed(children.get(span.run_id, [])))
        lost = [s for s in ordered if s.run_id not in placed]  # a loop of parents never reached from the root
        if not lost:
            return out
        stack = [(lost[0], 1)]


def trace_rows(engine: Engine, trace_id: str, *, tenant_id: str | None = None) -> Trace | None:
    """Every recorded run of one trace and its scores; ``None`` when the trace is not in the store
    (or belongs to another tenant than ``tenant_id``: the same answer, so its existence is not told)."""
    spans: list[Span] = []
    with engine.connect() as conn:
        for kind, table in _KINDS:
            conditions = [table.c.trace_id == trace_id]
            if tenant_id is not None:
                conditions.append(table.c.tenant_id == tenant_id)
            spans.extend(_span(kind, r) for r in conn.execute(select(table).where(*conditions)))
        if not spans:
            return None
        scores: list[TraceScore] = []
        if inspect(engine).has_table(SCORES.name):
            s = SCORES.c
            stmt = select(s.name, s.value, s.string_value, s.comment, s.run_id).where(s.trace_id == trace_id)
            if tenant_id is not None:
                stmt = stmt.where(s.tenant_id == tenant_id)
            scores = [TraceScore(r.name, r.value, r.string_value, r.comment, r.run_id)
                      for r in conn.execute(stmt.order_by(s.created_at))]
    return Trace(trace_id, _tree(spans), scores)


def recent_calls_rows(engine: Engine, *, limit: int = 50, errors_only: bool = False,
                      tenant_id: str | None = None, since: datetime | None = None) -> list[RecentCall]:
    """The latest LLM calls, newest first (only the failed ones with ``errors_only``)."""
    t = LLM_CALLS.c
    conditions = window(LLM_CALLS, since=since, tenant_id=tenant_id)
    if errors_only:
        conditions.append(t.status == "error")
    stmt = (select(t.run_id, t.trace_id, t.started_at, t.tenant_id, t.graph, t.node, t.provider, t.model, t.status,
                   t.error_type, t.error_message, t.input_tokens, t.output_tokens, t.total_cost, t.token_source,
                   t.duration_s)
            .where(*conditions).order_by(t.started_at.desc(), t.run_id.desc()).limit(limit))
    with engine.connect() as conn:
        return [RecentCall(r.run_id, r.trace_id, utc(r.started_at), r.tenant_id, r.graph, r.node, r.provider, r.model,
                           r.status, r.error_type, r.error_message, int(r.input_tokens or 0),
                           int(r.output_tokens or 0), _decimal(r.total_cost),
                           r.total_cost is None and r.token_source != "none", float(r.duration_s or 0))
                for r in conn.execute(stmt)]


def tenants(engine: Engine) -> list[str]:
    """The tenants the store has calls of (from the daily rollup: a few hundred rows, not the calls)."""
    table = llm_cost_daily if inspect(engine).has_table(llm_cost_daily.name) else LLM_CALLS
    column = table.c.tenant_id
    with engine.connect() as conn:
        return sorted(v for (v,) in conn.execute(select(column).distinct()) if v)
