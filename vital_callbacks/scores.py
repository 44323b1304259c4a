"""Quality scores: build them, attach them to the run they judge, and store them as rows.

A score names a run id or a trace id. The handler attaches it right away when it still remembers that
run (open, or among the last ended ones); otherwise the SQL sink looks the id up when it stores the
score — after the run's own rows, since both travel through the same queue. An id found nowhere is
stored with ``matched = false``: flagged, never lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection

from vital_callbacks import tables
from vital_callbacks.events import Score

ScoreValue = float | int | bool | str
_T = TypeVar("_T")


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


COPIED = ("trace_id", "tenant_id", "user_id", "session_id", "graph", "node")
"""What an unmatched score takes over from the stored run its target id names."""


def scores_last(rows: Mapping[str, list[_T]]) -> list[tuple[str, list[_T]]]:
    """Rows by kind, scores after runs, so a score can match a run stored in the same batch."""
    return sorted(rows.items(), key=lambda item: item[0] == "score")


def unmatched_targets(rows: list[dict[str, Any]]) -> set[str]:
    """The target ids the store has to look up (scores the handler could not attach itself)."""
    return {row["target_id"] for row in rows if not row.get("matched")}


def attach(rows: list[dict[str, Any]], found: Mapping[str, Any]) -> None:
    """Fill unmatched score rows from the runs ``found``: run id -> a record (row mapping, asyncpg
    ``Record``) indexable by ``run_id`` and the ``COPIED`` columns."""
    for row in rows:
        match = None if row.get("matched") else found.get(row["target_id"])
        if match is not None:
            row.update({key: match[key] for key in ("run_id", *COPIED)}, matched=True)


def resolve(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Attach unmatched score rows to the stored run (or trace root) their target id names."""
    wanted = unmatched_targets(rows)
    found: dict[str, Any] = {}
    for row_type in tables.EVENT_TABLES.values():
        if not wanted:
            break
        t = row_type.__table__.c  # type: ignore[attr-defined]
        stmt = select(t.run_id, *(t[c] for c in COPIED)).where(t.run_id.in_(list(wanted)))
        for record in conn.execute(stmt).mappings():
            found[record["run_id"]] = record
            wanted.discard(record["run_id"])
    attach(rows, found)
