"""Typed queries over the SQL store (SQLite or PostgreSQL), for the CLI, the HTTP API and notebooks.

Every query takes a SQLAlchemy engine (:func:`reader_engine` makes one from ``VITAL_DATABASE_URL``)
and an optional window (``since`` / ``until``, UTC), ``tenant_id`` and ``graph`` (agent). The plain
names (``cost_by``, ``latency``...) return a pandas DataFrame when pandas is installed, else a list of
dataclass rows; the ``*_rows`` names always return the rows, with exact ``Decimal`` USD amounts.

A cost is the sum of the *priced* calls and always comes with ``unpriced_calls``, the calls with tokens
but no known price that it leaves out: with any, the cost is a lower bound, and a group where nothing
was priced has cost ``None`` (NaN in a frame), never 0. :func:`format_usd` and :func:`spend` show
that to people: ``$12.40``, ``≥ $12.40 (3 unpriced)``, ``unpriced (3 calls)``.

    engine = analytics.reader_engine()
    analytics.cost_by(engine, ("day", "tenant"), since=datetime(2025, 3, 1, tzinfo=timezone.utc))
"""

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine

from vital_callbacks.analytics._common import DIMENSIONS, LLM_CALLS, Dimension, tabular, to_frame
from vital_callbacks.analytics.cache import CacheSaving, cache_savings_rows, total_saved, unpriced_saving_calls
from vital_callbacks.analytics.costs import (
    CostGroup,
    DayCost,
    ExpensiveRun,
    UnpricedModel,
    cost_by_rows,
    daily_cost_rows,
    expensive_runs_rows,
    top_spenders_rows,
    total_row,
    unpriced_calls_rows,
)
from vital_callbacks.analytics.display import spend
from vital_callbacks.analytics.latency import (
    LatencyGroup,
    agent_success_rows,
    latency_by_model_rows,
    latency_by_node_rows,
    latency_by_tool_rows,
    latency_rows,
)
from vital_callbacks.analytics.report import CostRow, cost_report, parse_since, report_total
from vital_callbacks.analytics.summary import (
    MonthProjection,
    ProjectionDay,
    QualityScore,
    Realtime,
    month_projection,
    quality_summary_rows,
    realtime,
)
from vital_callbacks.analytics.traces import (
    RecentCall,
    Span,
    Trace,
    TraceScore,
    TraceSummary,
    recent_calls_rows,
    tenants,
    trace_list_rows,
    trace_rows,
)
from vital_callbacks.core.money import format_usd, usd
from vital_callbacks.store.engine import reader_engine

agent_success = tabular(agent_success_rows)
cache_savings = tabular(cache_savings_rows)
cost_by = tabular(cost_by_rows)
daily_cost = tabular(daily_cost_rows)
expensive_runs = tabular(expensive_runs_rows)
latency = tabular(latency_rows)
latency_by_model = tabular(latency_by_model_rows)
latency_by_node = tabular(latency_by_node_rows)
latency_by_tool = tabular(latency_by_tool_rows)
quality_summary = tabular(quality_summary_rows)
top_spenders = tabular(top_spenders_rows)
unpriced_calls = tabular(unpriced_calls_rows)


def is_empty(engine: Engine) -> bool:
    """True when the store has no LLM calls yet (or no tables at all): time to load demo data."""
    if not inspect(engine).has_table(LLM_CALLS.name):
        return True
    with engine.connect() as conn:
        return not conn.execute(select(func.count()).select_from(LLM_CALLS)).scalar()


__all__ = [
    "DIMENSIONS",
    "CacheSaving",
    "CostGroup",
    "CostRow",
    "DayCost",
    "Dimension",
    "ExpensiveRun",
    "LatencyGroup",
    "MonthProjection",
    "ProjectionDay",
    "QualityScore",
    "Realtime",
    "RecentCall",
    "Span",
    "Trace",
    "TraceScore",
    "TraceSummary",
    "UnpricedModel",
    "agent_success",
    "agent_success_rows",
    "cache_savings",
    "cache_savings_rows",
    "cost_by",
    "cost_by_rows",
    "cost_report",
    "daily_cost",
    "daily_cost_rows",
    "expensive_runs",
    "expensive_runs_rows",
    "format_usd",
    "is_empty",
    "latency",
    "latency_by_model",
    "latency_by_model_rows",
    "latency_by_node",
    "latency_by_node_rows",
    "latency_by_tool",
    "latency_by_tool_rows",
    "latency_rows",
    "month_projection",
    "parse_since",
    "quality_summary",
    "quality_summary_rows",
    "reader_engine",
    "realtime",
    "recent_calls_rows",
    "report_total",
    "spend",
    "tabular",
    "tenants",
    "to_frame",
    "top_spenders",
    "top_spenders_rows",
    "total_row",
    "total_saved",
    "trace_list_rows",
    "trace_rows",
    "unpriced_calls",
    "unpriced_calls_rows",
    "unpriced_saving_calls",
    "usd",
]
