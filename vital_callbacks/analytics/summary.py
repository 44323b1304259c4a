"""Single-answer views: the last few minutes, this month's projected bill, and quality scores.

``now`` is a parameter everywhere so tests and the API can pin the clock; it defaults to the real
UTC time.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import case, func, inspect, select
from sqlalchemy.engine import Engine

from vital_callbacks.analytics._common import SCORES, utc, window
from vital_callbacks.analytics.costs import cost_by_rows, total_row
from vital_callbacks.analytics.latency import latency_rows
from vital_callbacks.core.money import priced_sum

_ZERO = Decimal(0)


def _now(now: datetime | None) -> datetime:
    return utc(now) if now is not None else datetime.now(timezone.utc)


@dataclass(frozen=True)
class Realtime:
    """LLM traffic of the last ``window_s`` seconds; ``cost_usd`` sums the priced calls and leaves out
    ``unpriced_calls`` (``None`` when there were calls and none was priced)."""

    window_s: int
    llm_calls: int
    calls_per_minute: float
    errors: int
    error_rate: float | None
    total_tokens: int
    cost_usd: Decimal | None
    p95_latency_s: float | None
    active_tenants: int
    unpriced_calls: int

    @property
    def cost_is_lower_bound(self) -> bool:
        return self.unpriced_calls > 0


def realtime(engine: Engine, minutes: int = 5, *, now: datetime | None = None,
             tenant_id: str | None = None) -> Realtime:
    """Calls, errors, tokens, cost and p95 latency of the last ``minutes`` minutes."""
    if minutes < 1:
        raise ValueError("minutes must be at least 1")
    end = _now(now)
    since = end - timedelta(minutes=minutes)
    total = total_row(engine, since=since, until=end, tenant_id=tenant_id)
    latency = latency_rows(engine, (), source="llm", since=since, until=end, tenant_id=tenant_id)[0]
    tenants = len(cost_by_rows(engine, "tenant", since=since, until=end, tenant_id=tenant_id))
    return Realtime(minutes * 60, total.calls, total.calls / minutes, total.errors,
                    total.errors / total.calls if total.calls else None, total.total_tokens, total.cost_usd,
                    latency.p95_s, tenants, total.unpriced_calls)


@dataclass(frozen=True)
class ProjectionDay:
    """One day of the month: its actual cost and the running total at ``at``, which for the days ahead
    (``projected``) continues from now at the month's average daily spend so far, so the last day's
    running total is the month's projection.

    ``at`` is the instant the running total stands for: the end of the day, or now for today.
    ``cost_usd`` is the day's priced calls (``None`` when that day had calls and none was priced; also
    ``None`` for days ahead); ``cumulative_usd`` is priced spend only, so with ``unpriced_calls`` on
    any day up to here it is a lower bound."""

    day: str
    cost_usd: Decimal | None
    cumulative_usd: Decimal
    projected: bool
    unpriced_calls: int
    at: datetime


@dataclass(frozen=True)
class MonthProjection:
    """Month-to-date spend and where the month ends at the average daily rate so far.

    Every amount is of priced calls only: with ``unpriced_calls`` this month, each is a lower bound
    (``is_lower_bound``), and with nothing priced at all they are ``None`` rather than 0."""

    month: str
    month_to_date_usd: Decimal | None
    days_elapsed: Decimal
    days_in_month: int
    daily_average_usd: Decimal | None
    projected_usd: Decimal | None
    days: list[ProjectionDay]
    unpriced_calls: int = 0

    @property
    def is_lower_bound(self) -> bool:
        return self.unpriced_calls > 0


def month_projection(engine: Engine, *, now: datetime | None = None, tenant_id: str | None = None,
                     graph: str | None = None) -> MonthProjection:
    """This (UTC) month's spend so far, its daily series, and the straight-line month-end projection.

    The average is over the *elapsed* part of the month (fractional days), so a projection made on the
    morning of the 1st is not ten times too high because one busy hour counts as a whole day.
    """
    end = _now(now)
    start = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days_in_month = calendar.monthrange(start.year, start.month)[1]
    daily = {g.key: g for g in cost_by_rows(engine, "day", since=start, until=end, tenant_id=tenant_id,
                                            graph=graph)}
    unpriced = sum(g.unpriced_calls for g in daily.values())
    month_to_date = priced_sum(sum((g.cost_usd or _ZERO for g in daily.values()), _ZERO), unpriced)
    elapsed = max(Decimal((end - start).total_seconds()) / Decimal(86400), Decimal("0.0416666666667"))  # >= 1 h
    average = (month_to_date or _ZERO) / elapsed
    days: list[ProjectionDay] = []
    running = _ZERO
    for number in range(1, days_in_month + 1):
        day = start.replace(day=number)
        label = day.strftime("%Y-%m-%d")
        day_end = day + timedelta(days=1)
        if day.date() <= end.date():
            group = daily.get(label)
            cost = group.cost_usd if group is not None else _ZERO
            running += cost or _ZERO
            days.append(ProjectionDay(label, cost, running, False, group.unpriced_calls if group else 0,
                                      min(day_end, end)))
        else:
            # From now, not from the end of today: today's remaining hours are part of the projection too.
            ahead = Decimal((day_end - end).total_seconds()) / Decimal(86400)
            days.append(ProjectionDay(label, None, running + average * ahead, True, 0, day_end))
    known = month_to_date is not None
    # The month's last running total, so a chart's line ends where its "projected" figure says.
    return MonthProjection(start.strftime("%Y-%m"), month_to_date, elapsed, days_in_month,
                           average if known else None, days[-1].cumulative_usd if known else None, days, unpriced)


@dataclass(frozen=True)
class QualityScore:
    """Scores of one name (e.g. ``helpfulness``): how many, and the numeric ones' mean / min / max."""

    name: str
    data_type: str
    count: int
    mean: float | None
    min: float | None
    max: float | None
    matched: int


def quality_summary_rows(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
                         tenant_id: str | None = None, graph: str | None = None) -> list[QualityScore]:
    """Evaluator and feedback scores per name; empty when the store has no ``scores`` table yet."""
    if not inspect(engine).has_table(SCORES.name):
        return []
    s = SCORES.c
    stmt = (
        select(s.name, s.data_type, func.count(), func.avg(s.value), func.min(s.value), func.max(s.value),
               func.sum(case((s.matched.is_(True), 1), else_=0)))
        .where(*window(SCORES, since=since, until=until, tenant_id=tenant_id, graph=graph))
        .group_by(s.name, s.data_type)
        .order_by(s.name, s.data_type)
    )
    with engine.connect() as conn:
        return [QualityScore(r[0], r[1], int(r[2]), _float(r[3]), _float(r[4]), _float(r[5]), int(r[6] or 0))
                for r in conn.execute(stmt)]


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
