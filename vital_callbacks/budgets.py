"""Spend limits per tenant, user, graph or globally: warn, alert, or stop a call before it spends.

Spend is known across processes: the current period's spend is summed from the SQL store once, kept
current from this process's own priced calls, and re-summed every ``VITAL_BUDGET_REFRESH_S`` — every
50 ms once a ``stop`` budget has passed its soft threshold. Replicas sharing one database therefore agree
within what the *other* replicas spend in one such interval plus their sink's flush interval
(``VITAL_FLUSH_INTERVAL_S``), plus calls already in flight: that is the stated tolerance.

The hot-path check is a set lookup per ``stop`` budget; a ``stop`` budget is the one case where the
handler raises into the workflow, because the user asked for exactly that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger("vital_callbacks")

Scope = Literal["tenant", "user", "graph", "global"]
Period = Literal["day", "month", "rolling"]
_ANY = "*"
NEAR_LIMIT_REFRESH_S = 0.05


class Budget(BaseModel):
    """One limit. ``match`` picks which tenant/user/graph it applies to; ``*`` means each one separately."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    scope: Scope
    match: str = _ANY
    period: Period = "day"
    hours: int | None = Field(default=None, gt=0, description="Window length for period: rolling.")
    amount_usd: Decimal = Field(gt=0)
    action: Literal["warn", "stop"] = "warn"
    soft_threshold: float = Field(default=0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _rolling_needs_hours(self) -> Budget:
        if self.period == "rolling" and self.hours is None:
            raise ValueError("period: rolling needs hours")
        if self.period != "rolling" and self.hours is not None:
            raise ValueError("hours only applies to period: rolling")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.scope}:{self.match}/{self.period}"

    def key_for(self, tenant: str | None, user: str | None, graph: str | None) -> str | None:
        """The spend bucket a call falls in, or ``None`` when this budget does not cover it."""
        if self.scope == "global":
            return _ANY
        value = {"tenant": tenant, "user": user, "graph": graph}[self.scope]
        if value is None:
            return None
        if self.match == _ANY or self.match == value:
            return value
        return None

    def period_start(self, now: datetime) -> datetime:
        if self.period == "day":
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "month":
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return now - timedelta(hours=self.hours or 0)

    def period_end(self, now: datetime) -> datetime:
        if self.period == "day":
            return self.period_start(now) + timedelta(days=1)
        if self.period == "month":
            start = self.period_start(now)
            return (start + timedelta(days=32)).replace(day=1)
        return now


class BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budgets: list[Budget] = Field(default_factory=list)


class BudgetFileError(ValueError):
    """A budgets file that does not parse or validate; the message names file and line."""


class BudgetExceeded(RuntimeError):
    """Raised from ``on_chat_model_start`` / ``on_llm_start`` by a ``stop`` budget: the call is not made."""

    def __init__(self, budget: Budget, key: str, spend: Decimal) -> None:
        self.budget = budget
        self.key = key
        self.spend = spend
        self.limit = budget.amount_usd
        scope = budget.scope if budget.scope == "global" else f"{budget.scope} {key!r}"
        super().__init__(f"budget {budget.label!r} exceeded for {scope}: spent ${spend:.6f} of ${self.limit} "
                         f"this {budget.period if budget.period != 'rolling' else f'{budget.hours}h window'}")


def _line_of(text: str, index: int) -> int | None:
    """1-based line of the ``index``-th item of the top-level ``budgets`` list."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        is_budgets = getattr(key, "value", None) == "budgets" and isinstance(value, yaml.SequenceNode)
        if is_budgets and 0 <= index < len(value.value):
            return int(value.value[index].start_mark.line) + 1
    return None


def load_budgets(path: Path) -> list[Budget]:
    """Parse and validate a budgets file, failing with the file and line of the first problem."""
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BudgetFileError(f"{path}{line}: not valid YAML: {exc}") from exc
    try:
        return BudgetsFile.model_validate(raw).budgets
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        item = loc[1] if len(loc) > 1 and loc[0] == "budgets" else None
        line_no = _line_of(text, item) if isinstance(item, int) else None
        where = f"{path}:{line_no}" if line_no else str(path)
        field = ".".join(str(p) for p in loc)
        raise BudgetFileError(f"{where}: {field}: {first['msg']}") from exc


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    key: str
    spend: Decimal
    limit: Decimal
    projected: Decimal
    period_start: datetime


class BudgetGuard:
    """Keeps each budget's current-period spend and answers "may this call go ahead?"."""

    def __init__(self, budgets: Sequence[Budget], *, database_url: str | None = None,
                 refresh_s: float = 10.0) -> None:
        self.budgets = list(budgets)
        self.stop_budgets = [b for b in self.budgets if b.action == "stop"]
        self._lock = threading.Lock()
        self._base: dict[tuple[int, str], Decimal] = {}  # summed from the store at the last refresh
        self._local: dict[tuple[int, str], Decimal] = {}  # this process's spend not yet in the store
        self._pending: dict[str, list[tuple[int, str, Decimal]]] = {}  # own calls, by run id, until stored
        self._blocked: set[tuple[int, str]] = set()
        self._warned: set[tuple[int, str, str, datetime]] = set()
        self._period: dict[int, datetime] = {}
        self.exceeded_total = 0
        self._engine: Any = None
        self._database_url = database_url
        self._refresh_s = refresh_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._rate: dict[tuple[int, str], float] = {}  # USD/s across all replicas, from successive refreshes
        self._last_refresh: float | None = None
        self._metrics = _BudgetMetrics.create()
        if database_url is not None:
            self.refresh()
            if refresh_s > 0:
                threading.Thread(target=self._refresh_loop, name="vital-budgets", daemon=True).start()

    # -- hot path ----------------------------------------------------------------------------------
    def check(self, tenant: str | None, user: str | None, graph: str | None) -> None:
        """Raise :class:`BudgetExceeded` if a ``stop`` budget covering this call is used up."""
        if not self._blocked:
            return
        for index, budget in enumerate(self.budgets):
            if budget.action != "stop":
                continue
            key = budget.key_for(tenant, user, graph)
            if key is not None and (index, key) in self._blocked:
                with self._lock:
                    self.exceeded_total += 1
                self._metrics.exceeded(budget, key)
                raise BudgetExceeded(budget, key, self._spend(index, key))

    def record(self, tenant: str | None, user: str | None, graph: str | None, cost: Decimal,
               run_id: str | None = None) -> None:
        """Add a priced call's cost to every budget that covers it."""
        if not cost:
            return
        shares: list[tuple[int, str, Decimal]] = []
        for index, budget in enumerate(self.budgets):
            key = budget.key_for(tenant, user, graph)
            if key is None:
                continue
            with self._lock:
                self._local[(index, key)] = self._local.get((index, key), Decimal(0)) + cost
            shares.append((index, key, cost))
            self._evaluate(index, budget, key)
        if shares and run_id is not None and self._database_url is not None:
            with self._lock:
                self._pending[run_id] = shares

    # -- state -------------------------------------------------------------------------------------
    def _spend(self, index: int, key: str) -> Decimal:
        return self._base.get((index, key), Decimal(0)) + self._local.get((index, key), Decimal(0))

    def _evaluate(self, index: int, budget: Budget, key: str) -> None:
        spend = self._spend(index, key)
        now = datetime.now(timezone.utc)
        start = budget.period_start(now)
        self._metrics.spend(budget, key, spend)
        if spend >= budget.amount_usd:
            if budget.action == "stop":
                self._blocked.add((index, key))
            self._warn_once(index, budget, key, "exceeded", start, spend)
        else:
            self._blocked.discard((index, key))
            if spend >= budget.amount_usd * Decimal(str(budget.soft_threshold)):
                self._warn_once(index, budget, key, "soft", start, spend)
                if budget.action == "stop":
                    self._wake.set()  # start refreshing fast now, not at the end of a long wait

    def _warn_once(self, index: int, budget: Budget, key: str, level: str, start: datetime, spend: Decimal) -> None:
        marker = (index, key, level, start if budget.period != "rolling" else datetime.min)
        with self._lock:
            if marker in self._warned:
                return
            self._warned.add(marker)
        what = "exceeded" if level == "exceeded" else f"passed {budget.soft_threshold:.0%} of"
        logger.warning("vital-callbacks: %s %s budget %r ($%s): $%.6f spent", key, what, budget.label,
                       budget.amount_usd, spend)

    def refresh(self) -> None:
        """Re-sum the current period's spend from the SQL store (all processes' rows)."""
        if self._database_url is None:
            return
        with self._lock:
            pending = dict(self._pending)
        try:
            # Which of our own calls the store already holds is read *before* the sums, so a row landing
            # in between is counted twice (stopping a little early) rather than not at all.
            stored = self._stored_run_ids(list(pending))
            base = self._sum_from_store()
        except Exception:
            logger.warning("vital-callbacks: could not read budget spend from the store; using local spend only",
                           exc_info=True)
            return
        now = time.monotonic()
        with self._lock:
            if self._last_refresh is not None and now > self._last_refresh:
                elapsed = now - self._last_refresh
                self._rate = {k: max(0.0, float(v - self._base.get(k, Decimal(0)))) / elapsed for k, v in base.items()}
            self._last_refresh = now
            for run_id in stored:
                self._pending.pop(run_id, None)
            local: dict[tuple[int, str], Decimal] = {}
            for shares in self._pending.values():
                for index, key, cost in shares:
                    local[(index, key)] = local.get((index, key), Decimal(0)) + cost
            self._base = base
            self._local = local
        for index, budget in enumerate(self.budgets):
            keys = {k for (i, k) in base if i == index} | {k for (i, k) in self._blocked if i == index}
            for key in keys:
                self._evaluate(index, budget, key)

    def _reader(self) -> Any:
        if self._engine is None:
            from vital_callbacks.analytics import reader_engine

            self._engine = reader_engine(self._database_url or "")
        return self._engine

    def _stored_run_ids(self, run_ids: list[str]) -> set[str]:
        from sqlalchemy import select

        from vital_callbacks.tables import LLMCallRow

        t = LLMCallRow.__table__.c  # type: ignore[attr-defined]
        found: set[str] = set()
        with self._reader().connect() as conn:
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start:start + 500]
                found.update(r[0] for r in conn.execute(select(t.run_id).where(t.run_id.in_(chunk))))
        return found

    def _sum_from_store(self) -> dict[tuple[int, str], Decimal]:
        from sqlalchemy import func, select

        from vital_callbacks.tables import LLMCallRow

        self._reader()
        t = LLMCallRow.__table__.c  # type: ignore[attr-defined]
        now = datetime.now(timezone.utc)
        out: dict[tuple[int, str], Decimal] = {}
        with self._engine.connect() as conn:
            for index, budget in enumerate(self.budgets):
                start = budget.period_start(now)
                column = {"tenant": t.tenant_id, "user": t.user_id, "graph": t.graph, "global": None}[budget.scope]
                cost = func.coalesce(func.sum(t.total_cost), 0)
                if column is None:
                    stmt = select(cost).where(t.started_at >= start)
                    out[(index, _ANY)] = Decimal(str(conn.execute(stmt).scalar_one()))
                    continue
                stmt = select(column, cost).where(t.started_at >= start, column.is_not(None)).group_by(column)
                if budget.match != _ANY:
                    stmt = stmt.where(column == budget.match)
                for key, total in conn.execute(stmt):
                    out[(index, str(key))] = Decimal(str(total))
        return out

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._next_refresh_s())
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    def _next_refresh_s(self) -> float:
        """Refresh fast while a stop budget is close to its limit, or would get there before the next
        normal refresh at the current spend rate: that is when the other replicas' spend matters."""
        for index, budget in enumerate(self.budgets):
            if budget.action != "stop":
                continue
            soft = float(budget.amount_usd) * budget.soft_threshold
            keys = {k for (i, k) in (*self._base, *self._local) if i == index}
            for key in keys:
                projected = float(self._spend(index, key)) + self._rate.get((index, key), 0.0) * self._refresh_s
                if projected >= soft:
                    return min(self._refresh_s, NEAR_LIMIT_REFRESH_S)
        return self._refresh_s

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def status(self, now: datetime | None = None) -> list[BudgetStatus]:
        """Each budget's spend per bucket, limit, and a linear projection to the end of the period."""
        now = now or datetime.now(timezone.utc)
        rows: list[BudgetStatus] = []
        for index, budget in enumerate(self.budgets):
            keys = sorted({k for (i, k) in (*self._base, *self._local) if i == index}) or [budget.match]
            start, end = budget.period_start(now), budget.period_end(now)
            elapsed = max((now - start).total_seconds(), 1.0)
            length = max((end - start).total_seconds(), elapsed)
            for key in keys:
                spend = self._spend(index, key)
                projected = spend if budget.period == "rolling" else spend * Decimal(length / elapsed)
                rows.append(BudgetStatus(budget, key, spend, budget.amount_usd, projected, start))
        return rows


class _BudgetMetrics:
    """Prometheus gauges for budgets, when prometheus-client is installed."""

    def __init__(self, spend: Any, limit: Any, exceeded: Any) -> None:
        self._spend, self._limit, self._exceeded = spend, limit, exceeded

    @classmethod
    def create(cls, registry: Any = None) -> _BudgetMetrics:
        try:
            from prometheus_client import REGISTRY, Counter, Gauge
        except ImportError:
            return cls(None, None, None)
        registry = registry or REGISTRY
        existing = getattr(registry, "_names_to_collectors", {})
        if "vital_budget_spend_usd" in existing:
            return cls(existing["vital_budget_spend_usd"], existing["vital_budget_limit_usd"],
                       existing["vital_budget_exceeded_total"])
        labels = ["budget", "scope", "period"]
        return cls(
            Gauge("vital_budget_spend_usd", "Spend in the budget's current period (USD).", labels, registry=registry),
            Gauge("vital_budget_limit_usd", "The budget's limit (USD).", labels, registry=registry),
            Counter("vital_budget_exceeded", "LLM calls stopped by a budget.", labels, registry=registry),
        )

    @staticmethod
    def _labels(budget: Budget, key: str) -> tuple[str, str, str]:
        scope = budget.scope if budget.scope == "global" else f"{budget.scope}:{key}"
        return budget.label, scope, budget.period

    def spend(self, budget: Budget, key: str, value: Decimal) -> None:
        if self._spend is not None:
            labels = self._labels(budget, key)
            self._spend.labels(*labels).set(float(value))
            self._limit.labels(*labels).set(float(budget.amount_usd))

    def exceeded(self, budget: Budget, key: str) -> None:
        if self._exceeded is not None:
            self._exceeded.labels(*self._labels(budget, key)).inc()


__all__ = ["Budget", "BudgetExceeded", "BudgetFileError", "BudgetGuard", "BudgetStatus", "load_budgets"]
