"""What the SQL store says of spend: each budget's spend this period summed from every process's rows,
and which of this process's own calls the store holds already (the guard's refresh reads both).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING

from vital_callbacks.budgets.model import ANY, Budget

if TYPE_CHECKING:  # SQLAlchemy is imported only when the store is read
    from sqlalchemy.engine import Engine


def no_tables_yet(exc: BaseException) -> bool:
    """Whether reading failed because the store has no tables yet (a sink has not migrated it)."""
    text = str(exc)
    return "no such table" in text or "UndefinedTable" in type(getattr(exc, "orig", exc)).__name__ or (
        "relation" in text and "does not exist" in text)


def stored_run_ids(engine: Engine, run_ids: list[str]) -> set[str]:
    """Those of ``run_ids`` the store's ``llm_calls`` holds."""
    from sqlalchemy import select

    from vital_callbacks.store.schema import llm_calls

    t = llm_calls.c
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start:start + 500]
            found.update(r[0] for r in conn.execute(select(t.run_id).where(t.run_id.in_(chunk))))
    return found


def spend_by_bucket(engine: Engine, budgets: Sequence[Budget]) -> dict[tuple[int, str], Decimal]:
    """The spend of each budget's buckets (by budget index and key) in its current period."""
    from sqlalchemy import func, select

    from vital_callbacks.store.schema import llm_calls

    t = llm_calls.c
    now = datetime.now(timezone.utc)
    out: dict[tuple[int, str], Decimal] = {}
    with engine.connect() as conn:
        for index, budget in enumerate(budgets):
            start = budget.period_start(now)
            column = {"tenant": t.tenant_id, "user": t.user_id, "graph": t.graph, "global": None}[budget.scope]
            cost = func.coalesce(func.sum(t.total_cost), 0)
            if column is None:
                stmt = select(cost).where(t.started_at >= start)
                out[(index, ANY)] = Decimal(str(conn.execute(stmt).scalar_one()))
                continue
            stmt = select(column, cost).where(t.started_at >= start, column.is_not(None)).group_by(column)
            if budget.match != ANY:
                stmt = stmt.where(column == budget.match)
            for key, total in conn.execute(stmt):
                out[(index, str(key))] = Decimal(str(total))
    return out
