"""Queries over the SQL store, shared by the CLI report (and the API and notebooks).

Sums and counts run in the database; latency percentiles are computed here from the durations of
the selected window so the same code serves SQLite (no percentile function) and PostgreSQL.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from vital_callbacks.tables import LLMCallRow

GroupBy = Literal["tenant", "user", "model", "provider", "node", "graph", "day"]
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None) -> datetime | None:
    """``7d``, ``24h``, ``30m`` -> the UTC instant that long ago; ``None`` -> no lower bound."""
    if not text:
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"cannot read {text!r} as a duration; use e.g. 30m, 24h, 7d")
    amount, unit = int(match.group(1)), match.group(2)
    return datetime.now(timezone.utc) - timedelta(**{_UNITS[unit]: amount})


@dataclass(frozen=True)
class CostRow:
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cost_usd: Decimal | None
    unpriced_calls: int
    errors: int
    p50_latency_s: float | None
    p95_latency_s: float | None


def _group_column(by: GroupBy) -> Any:
    t = LLMCallRow.__table__.c  # type: ignore[attr-defined]
    columns = {
        "tenant": t.tenant_id, "user": t.user_id, "model": t.model, "provider": t.provider,
        "node": t.node, "graph": t.graph, "day": func.date(t.started_at),
    }
    if by not in columns:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(columns)}")
    return columns[by]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def cost_report(engine: Engine, by: GroupBy = "tenant", since: datetime | None = None,
                until: datetime | None = None, tenant_id: str | None = None) -> list[CostRow]:
    """Calls, tokens, cost and latency of LLM calls grouped by ``by``, most expensive first."""
    t = LLMCallRow.__table__.c  # type: ignore[attr-defined]
    key = _group_column(by).label("key")
    conditions = []
    if since is not None:
        conditions.append(t.started_at >= since)
    if until is not None:
        conditions.append(t.started_at < until)
    if tenant_id is not None:
        conditions.append(t.tenant_id == tenant_id)
    stmt = (
        select(key, t.input_tokens, t.output_tokens, t.cache_read_tokens, t.total_cost, t.token_source,
               t.status, t.duration_s)
        .where(*conditions)
    )
    groups: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            name = "(none)" if row[0] is None else str(row[0])
            g = groups.setdefault(name, {"calls": 0, "in": 0, "out": 0, "cache": 0, "cost": None,
                                         "unpriced": 0, "errors": 0, "durations": []})
            g["calls"] += 1
            g["in"] += row[1] or 0
            g["out"] += row[2] or 0
            g["cache"] += row[3] or 0
            if row[4] is not None:
                g["cost"] = (g["cost"] or Decimal(0)) + Decimal(row[4])
            elif row[5] != "none":
                g["unpriced"] += 1
            if row[6] == "error":
                g["errors"] += 1
            g["durations"].append(float(row[7] or 0.0))
    out = [
        CostRow(name, g["calls"], g["in"], g["out"], g["cache"], g["cost"], g["unpriced"], g["errors"],
                _percentile(g["durations"], 0.50), _percentile(g["durations"], 0.95))
        for name, g in groups.items()
    ]
    out.sort(key=lambda r: (r.cost_usd or Decimal(0), r.calls), reverse=True)
    return out
