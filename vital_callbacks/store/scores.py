"""Scores in the SQL store: matched to the run or trace they name, after the runs of their batch.

Both SQL writers (SQLAlchemy and asyncpg) use these helpers; only the lookup's driver differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection

from vital_callbacks.store.schema import EVENT_TABLES

_T = TypeVar("_T")

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
    for table in EVENT_TABLES.values():
        if not wanted:
            break
        t = table.c
        stmt = select(t.run_id, *(t[c] for c in COPIED)).where(t.run_id.in_(list(wanted)))
        for record in conn.execute(stmt).mappings():
            found[record["run_id"]] = record
            wanted.discard(record["run_id"])
    attach(rows, found)
