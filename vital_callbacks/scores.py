"""Quality scores: build them, attach them to the run they judge, and store them as rows.

A score names a run id or a trace id. The handler attaches it right away when it still remembers that
run (open, or among the last ended ones); otherwise the SQL sink looks the id up when it stores the
score — after the run's own rows, since both travel through the same queue. An id found nowhere is
stored with ``matched = false``: flagged, never lost.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from vital_callbacks import tables
from vital_callbacks.events import Score

ScoreValue = float | int | bool | str


def make_score(target_id: str, name: str, value: ScoreValue, *, comment: str | None = None,
               context: dict[str, Any] | None = None) -> Score:
    """A ``Score`` event; ``context`` carries what is known of the target (trace, attribution)."""
    if isinstance(value, bool):
        data_type, numeric, text = "boolean", 1.0 if value else 0.0, None
    elif isinstance(value, (int, float)):
        data_type, numeric, text = "numeric", float(value), None
    elif isinstance(value, str):
        data_type, numeric, text = "categorical", None, value
    else:
        raise TypeError(f"a score value is a number, a bool or a string, not {type(value).__name__}")
    now = time.time()
    ctx = context or {}
    return Score(
        run_id=str(uuid.uuid4()),
        parent_run_id=ctx.get("run_id"),
        trace_id=ctx.get("trace_id") or target_id,
        tenant_id=ctx.get("tenant_id"),
        user_id=ctx.get("user_id"),
        session_id=ctx.get("session_id"),
        graph=ctx.get("graph"),
        node=ctx.get("node"),
        start_time=now,
        end_time=now,
        target_id=target_id,
        name=name,
        value=numeric,
        string_value=text,
        data_type=data_type,  # type: ignore[arg-type]
        comment=comment,
        matched=bool(ctx),
    )


def score_row(event: Score) -> dict[str, Any]:
    return {
        "score_id": event.run_id,
        "target_id": event.target_id,
        "run_id": event.parent_run_id,
        "trace_id": event.trace_id,
        "matched": event.matched,
        "name": event.name,
        "data_type": event.data_type,
        "value": event.value,
        "string_value": event.string_value,
        "comment": event.comment,
        "tenant_id": event.tenant_id,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "graph": event.graph,
        "node": event.node,
        "created_at": event.started_at,
    }


_COPIED = ("trace_id", "tenant_id", "user_id", "session_id", "graph", "node")


def resolve(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Attach unmatched score rows to the stored run (or trace) their target id names."""
    for row in rows:
        if row["matched"]:
            continue
        target = row["target_id"]
        for row_type in tables.EVENT_TABLES.values():
            t = row_type.__table__.c  # type: ignore[attr-defined]
            found = conn.execute(select(t.run_id, *(t[c] for c in _COPIED)).where(t.run_id == target)).first()
            if found is not None:
                row.update(dict(zip(("run_id", *_COPIED), found, strict=True)), matched=True)
                break
