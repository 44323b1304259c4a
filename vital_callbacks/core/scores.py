"""Quality scores as events: a numeric, boolean or categorical value for a run or a whole trace.

A score names a run id or a trace id. The handler attaches it right away when it still remembers that
run (open, or among the last ended ones); otherwise the SQL store looks the id up when it stores the
score (:mod:`vital_callbacks.store.scores`). An id found nowhere is stored with ``matched = false``:
flagged, never lost.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from vital_callbacks.core.events import Score

ScoreValue = float | int | bool | str


def make_score(target_id: str, name: str, value: ScoreValue, *, comment: str | None = None,
               context: dict[str, Any] | None = None) -> Score:
    """A ``Score`` event; ``context`` carries what is known of the target (trace, attribution)."""
    if isinstance(value, bool):
        data_type, numeric, text = "boolean", 1.0 if value else 0.0, None
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"a score value must be a finite number, not {value!r}")
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
