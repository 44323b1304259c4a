"""Response models of the HTTP API: what the OpenAPI schema documents and what clients receive.

USD amounts are JSON numbers (floats) rounded to 12 decimals, the precision of the store's columns;
the exact ``Decimal`` values stay available through :mod:`vital_callbacks.analytics`.

A cost is the sum of the priced calls. Next to it, ``unpriced_calls`` counts the calls with tokens but no
known price that it leaves out, and ``cost_is_lower_bound`` is true when there are any; a cost is
``null`` (never 0) when there were calls and none of them could be priced.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from vital_callbacks import analytics
from vital_callbacks.analytics import CostGroup, LatencyGroup, QualityScore, Realtime, RecentCall


def usd(value: Decimal | None) -> float | None:
    return None if value is None else round(float(value), 12)


_COST = "Sum of the priced calls' cost; null when there were calls and none could be priced."
_UNPRICED = "Calls with tokens but no known price, left out of the cost."
_LOWER_BOUND = "True when unpriced calls are left out: the real spend is at least the cost shown."


class Window(BaseModel):
    since: datetime = Field(description="Start of the window (inclusive), UTC.")
    until: datetime = Field(description="End of the window (exclusive), UTC.")


class Totals(BaseModel):
    """LLM calls of a window: counts, tokens and USD."""

    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_tokens: int
    cost_usd: float | None = Field(description=_COST)
    unpriced_calls: int = Field(description=_UNPRICED)
    cost_is_lower_bound: bool = Field(description=_LOWER_BOUND)
    cache_hits: int = Field(description="Calls answered by LangChain's response cache.")
    saved_usd: float = Field(description="What the response-cache hits of priced models would have cost.")

    @classmethod
    def of(cls, g: CostGroup) -> Totals:
        return cls(calls=g.calls, errors=g.errors, input_tokens=g.input_tokens, output_tokens=g.output_tokens,
                   total_tokens=g.total_tokens, cache_read_tokens=g.cache_read_tokens, cost_usd=usd(g.cost_usd),
                   unpriced_calls=g.unpriced_calls, cost_is_lower_bound=g.cost_is_lower_bound,
                   cache_hits=g.cache_hits, saved_usd=usd(g.saved_usd) or 0.0)


class CostGroupOut(Totals):
    """One group of ``by``: its key (null for calls without that attribute) and its totals."""

    key: str | None

    @classmethod
    def of(cls, g: CostGroup) -> CostGroupOut:
        return cls(key=g.key, **Totals.of(g).model_dump())


class Outcomes(BaseModel):
    """Outcomes and latency of a group of runs (LLM calls, node runs or graph runs)."""

    key: str | None
    runs: int
    successes: int
    errors: int
    interrupted: int
    success_rate: float | None = Field(description="successes / (successes + errors); null with no finished run.")
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @classmethod
    def of(cls, g: LatencyGroup) -> Outcomes:
        return cls(key=g.key, runs=g.runs, successes=g.successes, errors=g.errors, interrupted=g.interrupted,
                   success_rate=g.success_rate, mean_s=g.mean_s, p50_s=g.p50_s, p95_s=g.p95_s, p99_s=g.p99_s)


class RealtimeOut(BaseModel):
    """LLM traffic of the last few minutes."""

    tenant_id: str | None
    window_s: int
    llm_calls: int
    calls_per_minute: float
    errors: int
    error_rate: float | None
    total_tokens: int
    cost_usd: float | None = Field(description=_COST)
    unpriced_calls: int = Field(description=_UNPRICED)
    cost_is_lower_bound: bool = Field(description=_LOWER_BOUND)
    p95_latency_s: float | None
    active_tenants: int

    @classmethod
    def of(cls, r: Realtime, tenant_id: str | None) -> RealtimeOut:
        return cls(tenant_id=tenant_id, window_s=r.window_s, llm_calls=r.llm_calls,
                   calls_per_minute=r.calls_per_minute, errors=r.errors, error_rate=r.error_rate,
                   total_tokens=r.total_tokens, cost_usd=usd(r.cost_usd), unpriced_calls=r.unpriced_calls,
                   cost_is_lower_bound=r.cost_is_lower_bound, p95_latency_s=r.p95_latency_s,
                   active_tenants=r.active_tenants)


class TenantMetrics(BaseModel):
    tenant_id: str
    window: Window
    totals: Totals
    by_model: list[CostGroupOut]
    graph_runs: Outcomes


class AgentMetrics(BaseModel):
    agent_id: str = Field(description="The graph's name (or the agent_id metadata it ran under).")
    tenant_id: str | None
    window: Window
    totals: Totals
    graph_runs: Outcomes
    nodes: list[Outcomes]


class DayCost(BaseModel):
    day: str = Field(description="UTC date, YYYY-MM-DD.")
    calls: int
    total_tokens: int
    cost_usd: float | None = Field(description=_COST)
    unpriced_calls: int = Field(description=_UNPRICED)
    cost_is_lower_bound: bool = Field(description=_LOWER_BOUND)

    @classmethod
    def of(cls, d: analytics.DayCost) -> DayCost:
        return cls(day=d.day, calls=d.calls, total_tokens=d.total_tokens, cost_usd=usd(d.cost_usd),
                   unpriced_calls=d.unpriced_calls, cost_is_lower_bound=d.cost_is_lower_bound)


class DailyCost(BaseModel):
    tenant_id: str | None
    window: Window
    days: list[DayCost]
    total_usd: float | None = Field(description="Sum of the days' priced cost; null when the window has "
                                                "calls and none could be priced.")
    unpriced_calls: int = Field(description=_UNPRICED)
    cost_is_lower_bound: bool = Field(description=_LOWER_BOUND)


class QualityOut(BaseModel):
    name: str
    data_type: str
    count: int
    mean: float | None
    min: float | None
    max: float | None
    matched: int = Field(description="Scores whose target run or trace is in the store.")

    @classmethod
    def of(cls, q: QualityScore) -> QualityOut:
        return cls(name=q.name, data_type=q.data_type, count=q.count, mean=q.mean, min=q.min, max=q.max,
                   matched=q.matched)


class RecentCallOut(BaseModel):
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
    cost_usd: float | None = Field(description="Null for a call without a known price (never 0).")
    unpriced: bool
    duration_s: float

    @classmethod
    def of(cls, r: RecentCall) -> RecentCallOut:
        return cls(**{**dataclasses.asdict(r), "cost_usd": usd(r.cost_usd)})


class RecentCalls(BaseModel):
    """The latest LLM calls, newest first (the live tail)."""

    tenant_id: str | None
    level: str
    calls: list[RecentCallOut]


class QualitySummary(BaseModel):
    tenant_id: str | None
    window: Window
    scores: list[QualityOut]


class GroupedCosts(BaseModel):
    tenant_id: str | None
    window: Window
    by: str
    groups: list[CostGroupOut]


class AgentSuccess(BaseModel):
    tenant_id: str | None
    window: Window
    agents: list[Outcomes]


class Health(BaseModel):
    status: str = Field(description="'ok', or 'unavailable' when the store cannot be read.")
    database: str
