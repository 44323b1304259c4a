"""What the pages draw, computed from query results: a trace's waterfall, the daily trend's bars, the
budgets a caller may see. Plain data; the templates only lay it out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy.engine import Engine

from vital_callbacks import analytics
from vital_callbacks.analytics import DayCost, Span, Trace
from vital_callbacks.budgets import BudgetStatus


@dataclass(frozen=True)
class Bar:
    """One row of a waterfall: a span, where it starts and how long it is, in % of the trace."""

    span: Span
    left: float
    width: float
    offset_s: float


def waterfall(trace: Trace) -> list[Bar]:
    """Every span on the trace's time axis (the root's start to the last end)."""
    if not trace.spans:
        return []
    start = min(s.started_at for s in trace.spans)
    end = max(s.started_at.timestamp() + s.duration_s for s in trace.spans)
    total = max(end - start.timestamp(), 1e-6)
    bars = []
    for span in trace.spans:
        offset = span.started_at.timestamp() - start.timestamp()
        left = min(100.0, 100.0 * offset / total)
        width = max(0.4, min(100.0 - left, 100.0 * span.duration_s / total))
        bars.append(Bar(span, round(left, 3), round(width, 3), offset))
    return bars


@dataclass(frozen=True)
class Column:
    day: str
    x: float
    height: float
    cost: Decimal | None
    unpriced: int
    calls: int


CHART_HEIGHT = 120.0
CHART_WIDTH = 720.0


def trend(days: list[DayCost], first: date, last: date) -> list[Column]:
    """The daily cost of every day from ``first`` to ``last`` as SVG columns (drawn to the highest day;
    a day without calls is an empty column, a day with nothing priced has no height)."""
    if not days:
        return []
    known = {d.day: d for d in days}
    span = (last - first).days + 1
    days = [known.get(day, DayCost(day, 0, 0, None, 0))
            for day in ((first + timedelta(days=n)).isoformat() for n in range(span))]
    top = max((d.cost_usd or Decimal(0) for d in days), default=Decimal(0))
    step = CHART_WIDTH / len(days)
    out = []
    for n, d in enumerate(days):
        cost = d.cost_usd or Decimal(0)
        height = float(cost / top) * (CHART_HEIGHT - 10) if top > 0 else 0.0
        out.append(Column(d.day, round(n * step, 2), round(height, 2), d.cost_usd, d.unpriced_calls, d.calls))
    return out


def visible_budgets(statuses: list[BudgetStatus], tenant: str | None) -> list[BudgetStatus]:
    """An admin sees every budget; a tenant only its own tenant budgets (a user, graph or global budget
    sums several tenants' spend, which is not the tenant's to read)."""
    if tenant is None:
        return statuses
    return [s for s in statuses if s.budget.scope == "tenant" and s.key == tenant]


@dataclass(frozen=True)
class BudgetRow:
    """A budget's status and the calls in its period that had no price (its spend leaves them out)."""

    status: BudgetStatus
    unpriced_calls: int | None
    """``None`` where it is not counted (a per-user budget)."""

    def __getattr__(self, name: str) -> object:
        return getattr(self.status, name)


_SCOPE_DIMENSION = {"tenant": "tenant", "graph": "graph", "global": None}
"""The grouping that counts a budget's unpriced calls (a per-user budget's are not counted)."""


def with_unpriced(engine: Engine, statuses: list[BudgetStatus]) -> list[BudgetRow]:
    """Each status with its period's unpriced calls: one grouped query per (scope, period start), not
    one per key (a ``match: "*"`` budget has a status per tenant)."""
    counts: dict[tuple[str, datetime], dict[str | None, int]] = {}
    for s in statuses:
        scope = s.budget.scope
        group = (scope, s.period_start)
        if scope in _SCOPE_DIMENSION and group not in counts:
            by = _SCOPE_DIMENSION[scope]
            rows = analytics.cost_by_rows(engine, by if by is not None else (), since=s.period_start)
            counts[group] = {r.key: r.unpriced_calls for r in rows}
    out = []
    for s in statuses:
        found = counts.get((s.budget.scope, s.period_start))
        if found is None:
            out.append(BudgetRow(s, None))
        else:
            out.append(BudgetRow(s, found.get(s.key, 0) if s.budget.scope != "global" else found.get(None, 0)))
    return out
