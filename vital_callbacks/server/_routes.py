"""The endpoints. Each one is a thin shell: check the token's scope, call one analytics query, shape it.

Parameters are typed and bounded (FastAPI answers 422 with the offending parameter named), groupings
are a closed ``Literal`` set, and queries are SQLAlchemy expressions, so nothing a client sends is
spliced into SQL. A store that cannot be read answers 503 with a one-line reason; the details go to
the server's log, never into a response. (No ``from __future__ import annotations`` here: FastAPI must
resolve the closure-local ``Caller`` annotation at definition time.)
"""

import concurrent.futures
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.engine import Engine

from vital_callbacks import analytics
from vital_callbacks.core.money import priced_sum
from vital_callbacks.server import _models as m
from vital_callbacks.server._auth import COOKIE, Principal, TokenTable
from vital_callbacks.server._store import Store

logger = logging.getLogger("vital_callbacks")
_T = TypeVar("_T")

GroupBy = Literal["tenant", "user", "session", "model", "provider", "graph", "subgraph", "node", "tool", "day",
                  "hour"]
Hours = Annotated[int, Query(ge=1, le=24 * 366, description="Window: the last N hours.")]
TenantParam = Annotated[str | None, Query(min_length=1, max_length=256,
                                          description="Narrow to one tenant (tenant tokens: only their own).")]
Name = Annotated[str, Path(min_length=1, max_length=256)]
_bearer = HTTPBearer(auto_error=False, description="A token from VITAL_API_TOKENS.")


HEALTH_TIMEOUT_S = 1.0
"""How long ``/healthz`` waits for the store before it answers "unavailable"."""
_HEALTH = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="vital-healthz")


def metrics_router(engine: Engine | None = None, *, database_url: str | None = None,
                   tokens: TokenTable | str | None = None,
                   clock: Callable[[], datetime] | None = None) -> APIRouter:
    """The API as a router to mount in any FastAPI app (``app.include_router(metrics_router(), prefix=...)``).

    ``engine`` (or ``database_url``, default ``VITAL_DATABASE_URL``) is the store to read; ``tokens``
    the bearer tokens (a :class:`TokenTable` or the ``VITAL_API_TOKENS`` syntax; default: that
    setting). With no tokens configured every request but ``/healthz`` is refused.
    """
    return api_router(Store(engine, database_url), token_table(tokens), clock or utcnow)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def token_table(tokens: TokenTable | str | None) -> TokenTable:
    """``tokens`` as a table; ``None``: ``VITAL_API_TOKENS``."""
    if isinstance(tokens, TokenTable):
        return tokens
    if tokens is None:
        from vital_callbacks.core.settings import Settings

        secret = Settings().api_tokens
        tokens = secret.get_secret_value() if secret is not None else None
    return TokenTable.parse(tokens)


def api_router(store: Store, table: TokenTable, now: Callable[[], datetime]) -> APIRouter:
    """The endpoints over one store and token table (shared with the UI when both are served)."""

    def principal(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Principal:
        presented = credentials.credentials if credentials is not None else request.cookies.get(COOKIE)
        found = table.lookup(presented) if presented else None
        if found is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return found

    Caller = Annotated[Principal, Depends(principal)]

    def window(hours: int) -> tuple[datetime, datetime, m.Window]:
        until = now()
        since = until - timedelta(hours=hours)
        return since, until, m.Window(since=since, until=until)

    router = APIRouter()

    @router.get("/healthz", response_model=m.Health, tags=["health"], summary="Liveness and store reachability")
    def healthz() -> m.Health:
        def ping(engine: Engine) -> None:
            with engine.connect() as conn:
                conn.execute(select(1))

        # A store that accepts connections and never answers must not hold the probe: it is asked on a
        # thread of its own and given HEALTH_TIMEOUT_S (a hung ping stays there, it never piles up here).
        try:
            _HEALTH.submit(store.run, ping).result(timeout=HEALTH_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return m.Health(status="unavailable", database=f"no answer within {HEALTH_TIMEOUT_S:g} s")
        except HTTPException:
            return m.Health(status="unavailable", database="unreachable")
        return m.Health(status="ok", database="ok")

    @router.get("/metrics/realtime", response_model=m.RealtimeOut, tags=["metrics"],
                summary="LLM traffic of the last few minutes")
    def realtime(caller: Caller, tenant_id: TenantParam = None,
                 minutes: Annotated[int, Query(ge=1, le=1440)] = 5) -> m.RealtimeOut:
        tenant = caller.scope(tenant_id)
        result = store.run(lambda e: analytics.realtime(e, minutes, now=now(), tenant_id=tenant))
        return m.RealtimeOut.of(result, tenant)

    @router.get("/metrics/tenant/{tenant_id}", response_model=m.TenantMetrics, tags=["metrics"],
                summary="One tenant's spend, tokens and outcomes", responses={403: {"description": "Another tenant"}})
    def tenant_metrics(caller: Caller, tenant_id: Name, hours: Hours = 24) -> m.TenantMetrics:
        tenant = caller.scope(tenant_id) or tenant_id
        since, until, span = window(hours)

        def query(e: Engine) -> m.TenantMetrics:
            total = analytics.total_row(e, since=since, until=until, tenant_id=tenant)
            models = analytics.cost_by_rows(e, "model", since=since, until=until, tenant_id=tenant)
            runs = analytics.latency_rows(e, (), source="graph", since=since, until=until, tenant_id=tenant)[0]
            return m.TenantMetrics(tenant_id=tenant, window=span, totals=m.Totals.of(total),
                                   by_model=[m.CostGroupOut.of(g) for g in models], graph_runs=m.Outcomes.of(runs))

        return store.run(query)

    @router.get("/metrics/agent/{agent_id}", response_model=m.AgentMetrics, tags=["metrics"],
                summary="One agent's (graph's) spend, success rate and node latency")
    def agent_metrics(caller: Caller, agent_id: Name, hours: Hours = 24,
                      tenant_id: TenantParam = None) -> m.AgentMetrics:
        tenant = caller.scope(tenant_id)
        since, until, span = window(hours)

        def query(e: Engine) -> m.AgentMetrics:
            total = analytics.total_row(e, since=since, until=until, tenant_id=tenant, graph=agent_id)
            runs = analytics.latency_rows(e, (), source="graph", since=since, until=until, tenant_id=tenant,
                                          graph=agent_id)[0]
            # One agent's nodes: known by their subgraph and name (the graph is the agent).
            nodes = analytics.latency_rows(e, ("subgraph", "node"), source="node", since=since, until=until,
                                           tenant_id=tenant, graph=agent_id)
            return m.AgentMetrics(agent_id=agent_id, tenant_id=tenant, window=span, totals=m.Totals.of(total),
                                  graph_runs=m.Outcomes.of(runs), nodes=[m.Outcomes.of(n) for n in nodes])

        return store.run(query)

    @router.get("/metrics/cost/daily", response_model=m.DailyCost, tags=["metrics"],
                summary="Cost per UTC day")
    def daily_cost(caller: Caller, days: Annotated[int, Query(ge=1, le=366)] = 30,
                   tenant_id: TenantParam = None) -> m.DailyCost:
        tenant = caller.scope(tenant_id)
        until = now()
        since = until.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
        rows = store.run(lambda e: analytics.daily_cost_rows(e, since=since, until=until, tenant_id=tenant))
        unpriced = sum(g.unpriced_calls for g in rows)
        total = priced_sum(sum((g.cost_usd or Decimal(0) for g in rows), Decimal(0)), unpriced)
        return m.DailyCost(tenant_id=tenant, window=m.Window(since=since, until=until),
                           days=[m.DayCost.of(g) for g in rows], total_usd=m.usd(total), unpriced_calls=unpriced,
                           cost_is_lower_bound=unpriced > 0)

    @router.get("/analytics/recent-logs", response_model=m.RecentCalls, tags=["analytics"],
                summary="The latest LLM calls (or only the failed ones), newest first")
    def recent_logs(caller: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    level: Annotated[Literal["all", "error"], Query()] = "all",
                    tenant_id: TenantParam = None) -> m.RecentCalls:
        tenant = caller.scope(tenant_id)
        rows = store.run(lambda e: analytics.recent_calls_rows(e, limit=limit, errors_only=level == "error",
                                                               tenant_id=tenant))
        return m.RecentCalls(tenant_id=tenant, level=level, calls=[m.RecentCallOut.of(r) for r in rows])

    @router.get("/metrics/quality/summary", response_model=m.QualitySummary, tags=["metrics"],
                summary="Evaluator and feedback scores per name")
    def quality_summary(caller: Caller, hours: Hours = 24 * 7, tenant_id: TenantParam = None) -> m.QualitySummary:
        tenant = caller.scope(tenant_id)
        since, until, span = window(hours)
        rows = store.run(lambda e: analytics.quality_summary_rows(e, since=since, until=until, tenant_id=tenant))
        return m.QualitySummary(tenant_id=tenant, window=span, scores=[m.QualityOut.of(q) for q in rows])

    def grouped(caller: Principal, hours: int, by: str, tenant_id: str | None) -> m.GroupedCosts:
        tenant = caller.scope(tenant_id)
        since, until, span = window(hours)
        rows = store.run(lambda e: analytics.cost_by_rows(e, by, since=since, until=until, tenant_id=tenant))
        return m.GroupedCosts(tenant_id=tenant, window=span, by=by, groups=[m.CostGroupOut.of(g) for g in rows])

    @router.get("/analytics/token-usage", response_model=m.GroupedCosts, tags=["analytics"],
                summary="Tokens per hour (or per any grouping)")
    def token_usage(caller: Caller, hours: Hours = 24, by: GroupBy = "hour",
                    tenant_id: TenantParam = None) -> m.GroupedCosts:
        return grouped(caller, hours, by, tenant_id)

    @router.get("/analytics/costs", response_model=m.GroupedCosts, tags=["analytics"],
                summary="Cost grouped by model, tenant, user, graph, node, day...")
    def costs(caller: Caller, hours: Hours = 24, by: GroupBy = "model",
              tenant_id: TenantParam = None) -> m.GroupedCosts:
        return grouped(caller, hours, by, tenant_id)

    @router.get("/analytics/agent-success-rate", response_model=m.AgentSuccess, tags=["analytics"],
                summary="Success rate and latency of graph runs per agent")
    def agent_success_rate(caller: Caller, hours: Hours = 24,
                           agent_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
                           tenant_id: TenantParam = None) -> m.AgentSuccess:
        tenant = caller.scope(tenant_id)
        since, until, span = window(hours)
        rows = store.run(lambda e: analytics.agent_success_rows(e, since=since, until=until, tenant_id=tenant,
                                                                graph=agent_id))
        return m.AgentSuccess(tenant_id=tenant, window=span, agents=[m.Outcomes.of(g) for g in rows])

    return router
