"""Spend: cost and tokens grouped by any dimensions, top spenders, unpriced calls, expensive runs.

All sums run in the database. A call is *unpriced* when it reported (or was estimated to have) tokens
but no price was known, so its cost is NULL; calls with no usage at all (``token_source = 'none'``,
e.g. a failed request) have nothing to price and are not counted as unpriced.

Every cost here comes with ``unpriced_calls``, the calls it leaves out: with any, the cost is a lower
bound (``cost_is_lower_bound``), and a group where nothing was priced has cost ``None``, never 0
(see :func:`vital_callbacks.core.money.priced_sum`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from vital_callbacks.analytics import _rollup
from vital_callbacks.analytics._common import (
    GRAPH_RUNS,
    LLM_CALLS,
    dimension,
    dimensions,
    key_label,
    key_text,
    utc,
    window,
)
from vital_callbacks.core.money import priced_sum

_ZERO = Decimal(0)


@dataclass(frozen=True)
class CostGroup:
    """LLM calls of one group: counts, tokens, and USD (exact ``Decimal``).

    ``cost_usd`` sums the priced calls: ``None`` when the group's calls with tokens were all unpriced,
    a lower bound when ``unpriced_calls`` is not 0."""

    dims: tuple[str, ...]
    keys: tuple[str | None, ...]
    calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal | None
    unpriced_calls: int
    errors: int
    cache_hits: int
    saved_usd: Decimal

    @property
    def key(self) -> str | None:
        """The group's key as one text: its only key, or the keys joined by ``/`` (a node:
        ``graph/node``, ``graph/subgraph/node`` inside a subgraph)."""
        return key_label(self.dims, self.keys)

    @property
    def cost_is_lower_bound(self) -> bool:
        """Calls without a price are left out of ``cost_usd``: the real spend is at least that."""
        return self.unpriced_calls > 0


def _int(value: Any) -> int:
    return int(value or 0)


def _usd(value: Any) -> Decimal:
    return _ZERO if value is None else Decimal(value)


def _rank(cost: Decimal | None) -> Decimal:
    """Sort key: a group with nothing priced ranks with the cheapest (its cost is unknown, not high)."""
    return _ZERO if cost is None else cost


def _cost_aggregates() -> list[Any]:
    t = LLM_CALLS.c
    unpriced = and_(t.total_cost.is_(None), t.token_source != "none")
    return [
        func.count().label("calls"),
        func.sum(t.input_tokens).label("input_tokens"),
        func.sum(t.output_tokens).label("output_tokens"),
        func.sum(t.total_tokens).label("total_tokens"),
        func.sum(t.cache_read_tokens).label("cache_read_tokens"),
        func.sum(t.cache_write_tokens).label("cache_write_tokens"),
        func.sum(t.reasoning_tokens).label("reasoning_tokens"),
        func.sum(t.total_cost).label("cost_usd"),
        func.sum(case((unpriced, 1), else_=0)).label("unpriced_calls"),
        func.sum(case((t.status == "error", 1), else_=0)).label("errors"),
        func.sum(case((t.cache_hit.is_(True), 1), else_=0)).label("cache_hits"),
        func.sum(t.saved_cost).label("saved_usd"),
    ]


def cost_by_rows(engine: Engine, by: str | Sequence[str] = "tenant", *, since: datetime | None = None,
                 until: datetime | None = None, tenant_id: str | None = None, graph: str | None = None,
                 limit: int | None = None) -> list[CostGroup]:
    """Calls, tokens and cost of LLM calls grouped by ``by`` (one dimension or several, e.g.
    ``("day", "tenant")``; ``()`` for one grand total). Time buckets come out in time order, other
    groupings most expensive first.

    Whole UTC days come from the daily rollup when the grouping allows it (see
    :mod:`vital_callbacks.analytics._rollup`); the result is the same as summing the raw rows."""
    dims = dimensions(by)
    days = _rollup.plan(engine, dims, since, until, tenant_id=tenant_id, graph=graph)
    if days is None:
        return _raw_cost_by(engine, dims, since=since, until=until, tenant_id=tenant_id, graph=graph, limit=limit)
    merged: dict[tuple[str | None, ...], CostGroup] = {}
    parts = [_group(dims, row) for row in _rollup.grouped_sums(engine, dims, days, tenant_id=tenant_id,
                                                                         graph=graph)]
    for edge_since, edge_until in days.edges:
        parts += _raw_cost_by(engine, dims, since=edge_since, until=edge_until, tenant_id=tenant_id, graph=graph)
    for group in parts:
        known = merged.get(group.keys)
        merged[group.keys] = group if known is None else _add(known, group)
    if not dims and not merged:
        merged[()] = _empty(dims)
    return _ordered(dims, list(merged.values()))[:limit]


def _raw_cost_by(engine: Engine, dims: tuple[str, ...], *, since: datetime | None, until: datetime | None,
                 tenant_id: str | None, graph: str | None, limit: int | None = None) -> list[CostGroup]:
    keys = [dimension(LLM_CALLS, d, engine.dialect.name) for d in dims]
    aggregates = _cost_aggregates()
    stmt = select(*keys, *aggregates).where(*window(LLM_CALLS, since=since, until=until, tenant_id=tenant_id,
                                                    graph=graph))
    if keys:
        stmt = stmt.group_by(*keys)
        ordered_keys = [k.nulls_last() for k in keys]
        if dims[0] in ("day", "hour"):
            stmt = stmt.order_by(*ordered_keys)
        else:
            cost = aggregates[7]
            stmt = stmt.order_by(func.coalesce(cost, 0).desc(), aggregates[0].desc(), *ordered_keys)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        # Sorted again here, as merged results are: one order whichever path answered, whatever the
        # database's collation.
        return _ordered(dims, [_group(dims, row._mapping) for row in conn.execute(stmt)])


def _key(value: Any) -> str | None:
    """A group key as text; an empty string is a missing key, as the rollup (which cannot hold NULL
    keys) stores it."""
    return key_text(value) or None


def _group(dims: tuple[str, ...], m: Any) -> CostGroup:
    unpriced = _int(m["unpriced_calls"])
    cost = None if m["cost_usd"] is None else Decimal(m["cost_usd"])
    return CostGroup(
        dims, tuple(_key(m[d]) for d in dims), _int(m["calls"]), _int(m["input_tokens"]),
        _int(m["output_tokens"]), _int(m["total_tokens"]), _int(m["cache_read_tokens"]),
        _int(m["cache_write_tokens"]), _int(m["reasoning_tokens"]), priced_sum(cost, unpriced),
        unpriced, _int(m["errors"]), _int(m["cache_hits"]), _usd(m["saved_usd"]))


def _empty(dims: tuple[str, ...]) -> CostGroup:
    return CostGroup(dims, (), 0, 0, 0, 0, 0, 0, 0, _ZERO, 0, 0, 0, _ZERO)


def _add(a: CostGroup, b: CostGroup) -> CostGroup:
    unpriced = a.unpriced_calls + b.unpriced_calls
    # Sums as the rollup keeps them (nothing priced = 0), then the one rule for "nothing priced".
    cost = priced_sum(_usd(a.cost_usd) + _usd(b.cost_usd), unpriced)
    return CostGroup(a.dims, a.keys, a.calls + b.calls, a.input_tokens + b.input_tokens,
                     a.output_tokens + b.output_tokens, a.total_tokens + b.total_tokens,
                     a.cache_read_tokens + b.cache_read_tokens, a.cache_write_tokens + b.cache_write_tokens,
                     a.reasoning_tokens + b.reasoning_tokens, cost, unpriced, a.errors + b.errors,
                     a.cache_hits + b.cache_hits, a.saved_usd + b.saved_usd)


def _ordered(dims: tuple[str, ...], groups: list[CostGroup]) -> list[CostGroup]:
    """The raw query's order: time buckets ascending, else most expensive first (then most calls, then
    keys, missing keys last)."""
    def keys(g: CostGroup) -> tuple[tuple[bool, str], ...]:
        return tuple((k is None, k or "") for k in g.keys)

    if dims and dims[0] in ("day", "hour"):
        return sorted(groups, key=keys)
    return sorted(groups, key=lambda g: (-_rank(g.cost_usd), -g.calls, keys(g)))


def top_spenders_rows(engine: Engine, by: str = "tenant", n: int = 10, *, since: datetime | None = None,
                      until: datetime | None = None, tenant_id: str | None = None,
                      graph: str | None = None) -> list[CostGroup]:
    """The ``n`` most expensive groups of ``by`` (tenants, users, models...), most expensive first."""
    if by in ("day", "hour"):
        raise ValueError("top spenders are ranked by cost; group by a tenant, user, model, graph or node")
    return cost_by_rows(engine, by, since=since, until=until, tenant_id=tenant_id, graph=graph, limit=n)


def total_row(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
              tenant_id: str | None = None, graph: str | None = None) -> CostGroup:
    """One grand total over the window (zeros when it holds no calls; cost ``None`` when it holds calls
    and none of them could be priced)."""
    return cost_by_rows(engine, (), since=since, until=until, tenant_id=tenant_id, graph=graph)[0]


@dataclass(frozen=True)
class UnpricedModel:
    """Calls of one model that were recorded without a price: add a ``pricing/`` override for it."""

    provider: str | None
    model: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    first_seen: datetime
    last_seen: datetime


def unpriced_calls_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                        tenant_id: str | None = None, graph: str | None = None) -> list[UnpricedModel]:
    """Models whose calls had tokens but no known price, most calls first."""
    t = LLM_CALLS.c
    stmt = (
        select(t.provider, t.model, func.count().label("calls"), func.sum(t.input_tokens), func.sum(t.output_tokens),
               func.min(t.started_at), func.max(t.started_at))
        .where(t.total_cost.is_(None), t.token_source != "none",
               *window(LLM_CALLS, since=since, until=until, tenant_id=tenant_id, graph=graph))
        .group_by(t.provider, t.model)
        .order_by(func.count().desc(), t.model)
    )
    with engine.connect() as conn:
        return [UnpricedModel(r[0], r[1], _int(r[2]), _int(r[3]), _int(r[4]), utc(r[5]), utc(r[6]))
                for r in conn.execute(stmt)]


@dataclass(frozen=True)
class ExpensiveRun:
    """One graph run (an invoke/stream) with its rolled-up totals; ``cost_usd`` sums its priced calls and
    leaves out ``unpriced_calls``."""

    run_id: str
    tenant_id: str | None
    user_id: str | None
    graph: str | None
    started_at: datetime
    duration_s: float
    status: str
    llm_calls: int
    total_tokens: int
    cost_usd: Decimal
    unpriced_calls: int

    @property
    def cost_is_lower_bound(self) -> bool:
        return self.unpriced_calls > 0


def expensive_runs_rows(engine: Engine, n: int = 10, *, since: datetime | None = None,
                        until: datetime | None = None, tenant_id: str | None = None,
                        graph: str | None = None) -> list[ExpensiveRun]:
    """The ``n`` most expensive graph runs (nested subgraph runs excluded), most expensive first, by
    their priced calls. A run none of whose calls could be priced has no cost to rank it by and is not
    listed (:func:`unpriced_calls_rows` names its models)."""
    t = GRAPH_RUNS.c
    stmt = (
        select(t.run_id, t.tenant_id, t.user_id, t.graph, t.started_at, t.duration_s, t.status, t.llm_calls,
               t.total_tokens, t.cost_usd, t.unpriced_calls)
        .where(t.cost_usd.is_not(None), t.parent_run_id.is_(None),
               *window(GRAPH_RUNS, since=since, until=until, tenant_id=tenant_id, graph=graph))
        .order_by(t.cost_usd.desc(), t.run_id)
        .limit(n)
    )
    with engine.connect() as conn:
        return [ExpensiveRun(r[0], r[1], r[2], r[3], utc(r[4]), float(r[5] or 0.0), r[6], _int(r[7]), _int(r[8]),
                             _usd(r[9]), _int(r[10])) for r in conn.execute(stmt)]


@dataclass(frozen=True)
class DayCost:
    """One UTC day's LLM spend: the few columns a dashboard's daily chart needs (``cost_usd`` as in
    :class:`CostGroup`: ``None`` when nothing that day was priced)."""

    day: str
    calls: int
    total_tokens: int
    cost_usd: Decimal | None
    unpriced_calls: int

    @property
    def cost_is_lower_bound(self) -> bool:
        return self.unpriced_calls > 0


def daily_cost_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                    tenant_id: str | None = None, graph: str | None = None) -> list[DayCost]:
    """Cost per UTC day in time order (the HTTP API's daily chart): ``cost_by_rows(engine, "day")``'s
    numbers, which whole days take from the daily rollup."""
    return [DayCost(g.key or "", g.calls, g.total_tokens, g.cost_usd, g.unpriced_calls)
            for g in cost_by_rows(engine, "day", since=since, until=until, tenant_id=tenant_id, graph=graph)]
