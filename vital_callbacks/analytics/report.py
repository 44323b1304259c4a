"""The rows ``vital-callbacks report`` prints: cost and latency side by side per group."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy.engine import Engine

from vital_callbacks.analytics.costs import cost_by_rows
from vital_callbacks.analytics.latency import latency_rows
from vital_callbacks.core.money import priced_sum

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
    """The priced calls' sum; None when no call of the group could be priced (never shown as $0)."""
    unpriced_calls: int
    """Calls left out of ``cost_usd``: with any, it is a lower bound."""
    errors: int
    p50_latency_s: float | None
    p95_latency_s: float | None

    @property
    def cost_is_lower_bound(self) -> bool:
        return self.unpriced_calls > 0


def report_total(rows: list[CostRow]) -> tuple[int, Decimal | None, int]:
    """Calls, priced cost and unpriced calls over a report's rows (cost as :func:`priced_sum` decides)."""
    unpriced = sum(r.unpriced_calls for r in rows)
    cost = sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))
    return sum(r.calls for r in rows), priced_sum(cost, unpriced), unpriced


def cost_report(engine: Engine, by: str = "tenant", since: datetime | None = None,
                until: datetime | None = None, tenant_id: str | None = None) -> list[CostRow]:
    """Calls, tokens, cost and latency of LLM calls grouped by ``by``, most expensive first."""
    costs = cost_by_rows(engine, by, since=since, until=until, tenant_id=tenant_id)
    latency = {g.key: g for g in latency_rows(engine, by, source="llm", since=since, until=until,
                                              tenant_id=tenant_id)}
    out = []
    for g in costs:
        lat = latency.get(g.key)
        out.append(CostRow("(none)" if g.key is None else g.key, g.calls, g.input_tokens, g.output_tokens,
                           g.cache_read_tokens, g.cost_usd, g.unpriced_calls, g.errors,
                           lat.p50_s if lat else None, lat.p95_s if lat else None))
    if by not in ("day", "hour"):
        out.sort(key=lambda r: (r.cost_usd or Decimal(0), r.calls), reverse=True)
    return out
