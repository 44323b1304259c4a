"""What every query shares: the read-only engine, window filters, grouping keys, percentiles, frames.

Grouping keys and time buckets are SQLAlchemy expressions chosen from a fixed table of names, so no
text from a caller ever reaches the SQL. Time buckets are computed in the database in UTC with each
dialect's own function, so GROUP BY stays in SQL on SQLite and PostgreSQL alike, and come out as the
same strings (``2025-03-10`` / ``2025-03-10T14:00``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, Union

from sqlalchemy import Table, func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from vital_callbacks.store.schema import graph_runs, llm_calls, node_runs, scores, tool_calls

if TYPE_CHECKING:
    import pandas as pd

Dimension = Literal["tenant", "user", "session", "model", "provider", "graph", "subgraph", "node", "tool", "day",
                    "hour"]
DIMENSIONS: tuple[Dimension, ...] = ("tenant", "user", "session", "model", "provider", "graph", "subgraph", "node",
                                     "tool", "day", "hour")
_COLUMN_OF: dict[str, str] = {"tenant": "tenant_id", "user": "user_id", "session": "session_id", "model": "model",
                              "provider": "provider", "graph": "graph", "subgraph": "subgraph", "node": "node",
                              "tool": "name"}
NODE_IDENTITY = ("graph", "subgraph", "node")
"""What names a node: two graphs (or a graph and its subgraph) may each have an ``agent`` node."""
_ONLY_ON = {"tool": "tool_calls"}
"""Dimensions whose column name means something else on other tables (a graph run has a ``name`` too)."""
_COLUMN_ON: dict[tuple[str, str], str] = {("tool", "llm_calls"): "tool"}
"""A dimension's column on one table in particular: LLM calls name the tool they were made in."""
_BUCKETS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00"}

LLM_CALLS: Table = llm_calls
NODE_RUNS: Table = node_runs
GRAPH_RUNS: Table = graph_runs
TOOL_CALLS: Table = tool_calls
SCORES: Table = scores

P = ParamSpec("P")
R = TypeVar("R")
Rows = Union["pd.DataFrame", list[R]]


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already (as SQLite returns them)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def dimension(table: Table, name: str, dialect: str) -> ColumnElement[Any]:
    """The grouping expression named ``name`` on ``table``, labelled with that name."""
    if name in _BUCKETS:
        sqlite_fmt = _BUCKETS[name]
        column = table.c.started_at if "started_at" in table.c else table.c.created_at
        if dialect == "postgresql":
            # date() / date_trunc() group ~40% faster than to_char(); key_text() formats the result.
            # literal_column, not a bind: GROUP BY must repeat the select's expression exactly.
            utc_column = func.timezone("UTC", column)
            if name == "day":
                return func.date(utc_column).label(name)
            return func.date_trunc(literal_column("'hour'"), utc_column).label(name)
        if dialect == "sqlite":
            return func.strftime(literal_column(f"'{sqlite_fmt}'"), column).label(name)
        raise ValueError(f"time buckets are implemented for SQLite and PostgreSQL, not {dialect}")
    special = _COLUMN_ON.get((name, table.name))
    if special is not None and special in table.c:
        return table.c[special].label(name)
    column_name = _COLUMN_OF.get(name)
    if column_name is None or column_name not in table.c or _ONLY_ON.get(name, table.name) != table.name:
        usable = [d for d in DIMENSIONS if d in _BUCKETS or (d, table.name) in _COLUMN_ON
                  or (_COLUMN_OF[d] in table.c and _ONLY_ON.get(d, table.name) == table.name)]
        raise ValueError(f"cannot group {table.name} by {name!r}; choose from {', '.join(usable)}")
    return table.c[column_name].label(name)


def dimensions(by: str | Sequence[str]) -> tuple[str, ...]:
    """The grouping keys of ``by``: ``"node"`` alone means a node where it runs (``NODE_IDENTITY``); a
    sequence is taken as it is given."""
    if by == "node":
        return NODE_IDENTITY
    return (by,) if isinstance(by, str) else tuple(by)


def key_label(dims: Sequence[str], keys: Sequence[str | None]) -> str | None:
    """A group's key as one text: its only key, or the keys joined by ``/`` (a node inside no subgraph
    reads ``graph/node``); a missing key is empty."""
    if len(keys) <= 1:
        return keys[0] if keys else None
    if all(k is None for k in keys):
        return None
    return "/".join(k or "" for d, k in zip(dims, keys, strict=True) if k is not None or d != "subgraph")


def window(table: Table, *, since: datetime | None = None, until: datetime | None = None,
           tenant_id: str | None = None, graph: str | None = None) -> list[ColumnElement[bool]]:
    """WHERE conditions: ``since <= started_at < until``, one tenant, one graph (agent)."""
    time_column = table.c.started_at if "started_at" in table.c else table.c.created_at
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(time_column >= utc(since))
    if until is not None:
        conditions.append(time_column < utc(until))
    if tenant_id is not None:
        conditions.append(table.c.tenant_id == tenant_id)
    if graph is not None:
        conditions.append(table.c.graph == graph)
    return conditions


def key_text(value: Any) -> str | None:
    """A group key as text; PostgreSQL's time buckets arrive as date / datetime and get SQLite's format."""
    if isinstance(value, datetime):
        return value.strftime(_BUCKETS["hour"])
    if isinstance(value, date):
        return value.isoformat()
    return None if value is None else str(value)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the closest ranks."""
    if not sorted_values:
        return None
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _records(rows: Sequence[Any]) -> list[dict[str, Any]]:
    records = []
    for row in rows:
        record = dataclasses.asdict(row)
        if "dims" in record and "keys" in record:  # grouped rows: one column per dimension
            grouped = dict(zip(record.pop("dims"), record.pop("keys"), strict=True))
            record = {**grouped, **record}
        records.append({k: float(v) if isinstance(v, Decimal) else v for k, v in record.items()})
    return records


def to_frame(rows: Sequence[Any], row_type: type | None = None) -> pd.DataFrame:
    """Rows (dataclasses) as a DataFrame; USD amounts become floats, which plotting needs, and a missing
    amount (nothing priced) becomes NaN, which pandas leaves out of sums and plots instead of counting
    it as 0. With no rows, ``row_type`` still gives the frame its columns, so ``frame["cost_usd"]``
    works on an empty window."""
    import pandas as pd

    if not rows and row_type is not None and dataclasses.is_dataclass(row_type):
        frame = pd.DataFrame(columns=[f.name for f in dataclasses.fields(row_type) if f.name not in ("dims", "keys")])
    else:
        frame = pd.DataFrame.from_records(_records(rows))
    usd = [c for c in frame.columns if str(c).endswith("_usd")]
    return frame.astype(dict.fromkeys(usd, "float64")) if usd else frame


def _pandas_installed() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def tabular(fn: Callable[P, list[R]]) -> Callable[P, Rows[R]]:
    """``fn`` returning a DataFrame when pandas is installed, else its list of dataclass rows."""

    returns = typing.get_type_hints(fn).get("return")
    row_type = (typing.get_args(returns) or (None,))[0]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Rows[R]:
        rows = fn(*args, **kwargs)
        return to_frame(rows, row_type) if _pandas_installed() else rows

    wrapper.__doc__ = f"{fn.__doc__}\n\nA pandas DataFrame when pandas is installed, else ``{fn.__name__}``'s rows."
    return wrapper
