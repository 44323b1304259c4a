"""Recompute stored LLM-call costs with today's prices (``vital-callbacks reprice``).

Each call is priced again from what it billed (its stored raw usage, read as it would be today; its
token columns for rows stored without one) by the same :class:`~vital_callbacks.pricing.PriceBook`
the handler uses, at the price in force at the call's own ``started_at``. Only the cost columns
change: the token counts are the record of what the provider billed, and a reprice is about what
that was worth.

The window is walked in keyset order of ``(started_at, run_id)``, one transaction per batch, so an
interrupted run leaves whole batches applied and the rest untouched, and a run repeated afterwards
finds nothing left to change in the applied ones. A changed call's previous cost and source go to
``llm_cost_audit`` in the batch's transaction, under one ``reprice_id`` per run. The daily rollup is
not touched here: the database's own triggers on ``llm_calls`` (migration 0004) move it with each
update.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnClause,
    Numeric,
    String,
    and_,
    bindparam,
    cast,
    column,
    create_engine,
    insert,
    or_,
    select,
    update,
    values,
)
from sqlalchemy.engine import Connection, Engine, RowMapping

from vital_callbacks.core.events import Cost, TokenUsage
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.providers.billing import Part, with_web_searches
from vital_callbacks.providers.usage import reread
from vital_callbacks.store.engine import make_engine, sync_url
from vital_callbacks.store.schema import llm_calls, llm_cost_audit

BATCH_SIZE = 500
"""Calls per transaction: small enough that a batch holds its row locks briefly, large enough that a
long history is not thousands of commits."""

_ZERO = Decimal(0)
_CACHE = Cost(_ZERO, _ZERO, _ZERO, "cache")
"""What a response-cache hit costs, as the handler records it (the provider was not called)."""
_ABSOLUTE = Decimal("1e-12")
"""The cost columns' scale: PostgreSQL rounds what it stores to it."""
_RELATIVE = Decimal("1e-15")
"""SQLite keeps NUMERIC as a binary float (about 16 significant digits): a value read back may differ
from the one written in its last digits, which is no change of price."""

_COUNTS = {"input": "input_tokens", "output": "output_tokens", "total": "total_tokens",
           "cache_read": "cache_read_tokens", "cache_write": "cache_write_tokens", "reasoning": "reasoning_tokens",
           "cache_write_1h": "cache_write_1h_tokens", "input_audio": "input_audio_tokens",
           "cache_audio_read": "cache_audio_read_tokens", "output_audio": "output_audio_tokens",
           "web_searches": "web_searches"}
"""TokenUsage field -> ``llm_calls`` column, to rebuild the usage of a row stored without raw usage."""
_DETAIL = 1024
"""The audit's ``*_price_detail`` length: a cache hit's detail gains its saved cost."""
_COST_COLUMNS = ("input_cost", "output_cost", "total_cost", "price_source", "price_detail", "saved_cost")
_READ = ("run_id", "started_at", "tenant_id", "provider", "model", "service_tier", "cache_hit", "raw_usage",
         *_COUNTS.values(), *_COST_COLUMNS)


@dataclass(frozen=True)
class Window:
    """Which calls to reprice: ``since <= started_at < until``, optionally one model or one tenant."""

    since: datetime
    until: datetime | None = None
    model: str | None = None
    """The stored (served) model name, exactly."""
    tenant_id: str | None = None

    def __post_init__(self) -> None:
        if self.until is not None and _utc(self.until) <= _utc(self.since):
            raise ValueError(f"the window is empty: until ({self.until.isoformat()}) is not after since "
                             f"({self.since.isoformat()})")


@dataclass(frozen=True)
class Priced:
    """A call's cost columns."""

    input: Decimal | None
    output: Decimal | None
    total: Decimal | None
    source: str | None
    detail: str | None
    saved: Decimal | None
    """A cache hit's ``saved_cost``: what the call would have cost."""

    @classmethod
    def of(cls, cost: Cost | None, saved: Decimal | None = None) -> Priced:
        if cost is None:
            return cls(None, None, None, None, None, saved)
        return cls(cost.input, cost.output, cost.total, cost.source, cost.detail, saved)

    def same_amounts(self, other: Priced) -> bool:
        """Equal as money (the sources are provenance: a new catalog release quoting the same price
        is no reason to rewrite a row)."""
        return all(_same(a, b) for a, b in ((self.input, other.input), (self.output, other.output),
                                            (self.total, other.total), (self.saved, other.saved)))


@dataclass
class Group:
    """The calls of one UTC day, tenant and model in the window, before and after repricing."""

    day: date
    tenant_id: str | None
    model: str | None
    calls: int = 0
    changed: int = 0
    old_total: Decimal = _ZERO
    """Sum over the group's priced calls (cache hits count as priced, at 0)."""
    new_total: Decimal = _ZERO
    old_priced: int = 0
    new_priced: int = 0
    became_priced: int = 0
    became_unpriced: int = 0
    old_saved: Decimal = _ZERO
    new_saved: Decimal = _ZERO

    @property
    def old_unpriced(self) -> int:
        return self.calls - self.old_priced

    @property
    def new_unpriced(self) -> int:
        return self.calls - self.new_priced

    @property
    def difference(self) -> Decimal | None:
        """New minus old priced sum; ``None`` when calls became unpriced or priced, where the sums
        cover different calls and their difference would read as a saving (or a cost) that is not one."""
        if self.became_unpriced or self.became_priced:
            return None
        return self.new_total - self.old_total

    def add(self, old: Priced, new: Priced, changed: bool) -> None:
        self.calls += 1
        self.changed += changed
        if old.total is not None:
            self.old_priced += 1
            self.old_total += old.total
        if new.total is not None:
            self.new_priced += 1
            self.new_total += new.total
        self.became_priced += old.total is None and new.total is not None
        self.became_unpriced += old.total is not None and new.total is None
        self.old_saved += old.saved or _ZERO
        self.new_saved += new.saved or _ZERO

    def merge(self, other: Group) -> None:
        for name in ("calls", "changed", "old_total", "new_total", "old_priced", "new_priced", "became_priced",
                     "became_unpriced", "old_saved", "new_saved"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


GroupKey = tuple[date, str | None, str | None]


@dataclass
class Summary:
    """What a reprice found (a preview) or did (an apply), per day, tenant and model."""

    reprice_id: str | None = None
    """Names the run on its audit rows; ``None`` for a preview, which writes nothing."""
    groups: dict[GroupKey, Group] = field(default_factory=dict)
    batches: int = 0
    """Batches read (a preview) or committed (an apply)."""

    def group(self, day: date, tenant_id: str | None, model: str | None) -> Group:
        key = (day, tenant_id, model)
        found = self.groups.get(key)
        if found is None:
            found = self.groups[key] = Group(day, tenant_id, model)
        return found

    def merge(self, other: Summary) -> None:
        for key, group in other.groups.items():
            self.group(*key).merge(group)
        self.batches += other.batches

    def changed_groups(self) -> list[Group]:
        """The groups with a changed call, by day, tenant and model (missing names first)."""
        return sorted((g for g in self.groups.values() if g.changed),
                      key=lambda g: (g.day, g.tenant_id or "", g.model or ""))

    @property
    def total(self) -> Group:
        """The whole window as one group (its ``day`` means nothing)."""
        out = Group(date.min, None, None)
        for group in self.groups.values():
            out.merge(group)
        return out


class RepriceInterrupted(RuntimeError):
    """A batch failed: the batches before it stay applied (see :attr:`summary`), it and the rest are
    untouched; running the same reprice again finishes the work."""

    def __init__(self, summary: Summary, cause: BaseException) -> None:
        self.summary = summary
        applied = summary.total
        reason = (str(cause).strip().splitlines() or [""])[0]
        super().__init__(f"batch {summary.batches + 1} failed ({type(cause).__name__}: {reason}); the "
                         f"{summary.batches} batch(es) before it stay applied ({applied.changed} call(s) repriced, "
                         f"reprice id {summary.reprice_id}); run the same command again to finish")


def open_engine(url: str) -> Engine:
    """A synchronous engine that may write, on the store at ``url``.

    The store's writer speaks asyncpg; a command on a plain thread uses psycopg 3 (as the analytics'
    :func:`~vital_callbacks.store.engine.reader_engine` does, whose sessions are read-only)."""
    url = sync_url(url)
    if url.startswith("postgresql+psycopg://"):
        return create_engine(url, pool_pre_ping=True, connect_args={"application_name": "vital-callbacks-reprice"})
    return make_engine(url)


def preview(engine: Engine, book: PriceBook, window: Window, *, batch_size: int = BATCH_SIZE) -> Summary:
    """What :func:`apply` would change, changing nothing."""
    return _walk(engine, book, window, batch_size, None)


def apply(engine: Engine, book: PriceBook, window: Window, *, batch_size: int = BATCH_SIZE,
          reprice_id: str | None = None) -> Summary:
    """Reprice the window, one transaction per batch; raises :class:`RepriceInterrupted` (with what
    was applied before) when a batch fails."""
    summary = Summary(reprice_id or uuid.uuid4().hex)
    return _walk(engine, book, window, batch_size, summary)


def _walk(engine: Engine, book: PriceBook, window: Window, batch_size: int, applied: Summary | None) -> Summary:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    summary = applied if applied is not None else Summary()
    after: tuple[Any, str] | None = None
    while True:
        batch = Summary(summary.reprice_id, batches=1)
        try:
            with engine.begin() as conn:
                rows = conn.execute(_select(window, after, batch_size, locking=applied is not None,
                                            dialect=engine.dialect.name)).mappings().all()
                if not rows:
                    return summary
                changes = _reprice(book, rows, batch)
                if applied is not None and changes:
                    _write(conn, changes, summary.reprice_id or "")
        except Exception as exc:
            if applied is None:
                raise
            raise RepriceInterrupted(summary, exc) from exc
        summary.merge(batch)  # only now: a batch that failed is not in what was applied
        after = (rows[-1]["started_at"], rows[-1]["run_id"])
        if len(rows) < batch_size:
            return summary


def _select(window: Window, after: tuple[Any, str] | None, limit: int, *, locking: bool, dialect: str) -> Any:
    c = llm_calls.c
    stmt = select(*(c[name] for name in _READ)).where(c.token_source != "none", c.started_at >= _utc(window.since))
    if window.until is not None:
        stmt = stmt.where(c.started_at < _utc(window.until))
    if window.model is not None:
        stmt = stmt.where(c.model == window.model)
    if window.tenant_id is not None:
        stmt = stmt.where(c.tenant_id == window.tenant_id)
    if after is not None:
        # The value as read back, so it compares exactly as stored (SQLite keeps text).
        stmt = stmt.where(or_(c.started_at > after[0], and_(c.started_at == after[0], c.run_id > after[1])))
    stmt = stmt.order_by(c.started_at, c.run_id).limit(limit)
    if locking and dialect == "postgresql":
        # The old cost the audit keeps must be the one the update replaces, whoever else writes.
        stmt = stmt.with_for_update()
    return stmt


@dataclass(frozen=True)
class _Change:
    run_id: str
    old: Priced
    new: Priced
    cache_hit: bool
    saved_source: str | None


def _reprice(book: PriceBook, rows: Iterable[RowMapping], summary: Summary) -> list[_Change]:
    changes: list[_Change] = []
    for row in rows:
        started = _aware(row["started_at"])
        old = Priced(row["input_cost"], row["output_cost"], row["total_cost"], row["price_source"],
                     row["price_detail"], row["saved_cost"])
        usage, parts = usage_of(row)
        cost = book.price(row["provider"], row["model"], usage, started, service_tier=row["service_tier"],
                          parts=parts)
        # A cache hit's cost stays 0: only what it saved follows the price.
        new = Priced.of(_CACHE, cost.total if cost is not None else None) if row["cache_hit"] else Priced.of(cost)
        changed = not old.same_amounts(new)
        summary.group(started.astimezone(timezone.utc).date(), row["tenant_id"], row["model"]).add(old, new, changed)
        if changed:
            changes.append(_Change(row["run_id"], old, new, bool(row["cache_hit"]),
                                   cost.source if cost is not None else None))
    return changes


def usage_of(row: Mapping[Any, Any]) -> tuple[TokenUsage, tuple[Part, ...]]:
    """What a stored call billed, as the handler would read it today: its raw usage re-read, or its
    token columns when it has none (rows stored before 0005) or it cannot be read."""
    raw = row.get("raw_usage")
    read = reread(raw, row.get("model")) if raw else None
    if read is None:
        return TokenUsage(**{name: int(row.get(col) or 0) for name, col in _COUNTS.items()}), ()
    usage, parts = read
    searches = int(row.get("web_searches") or 0)
    if searches and not usage.web_searches:
        # OpenAI's Responses API counts its web searches in content blocks, not in the usage object.
        usage, parts = with_web_searches(usage, parts, searches)
    return usage, parts


def _write(conn: Connection, changes: list[_Change], reprice_id: str) -> None:
    now = datetime.now(timezone.utc)
    new_values = [{"run_id": ch.run_id, "input_cost": ch.new.input, "output_cost": ch.new.output,
                   "total_cost": ch.new.total, "price_source": ch.new.source, "price_detail": _fit(ch.new.detail),
                   "saved_cost": ch.new.saved} for ch in changes]
    if conn.dialect.name == "postgresql":
        _update_at_once(conn, new_values)
    else:
        c = llm_calls.c
        stmt = update(llm_calls).where(c.run_id == bindparam("b_run_id")).values(
            {name: bindparam(f"b_{name}") for name in _COST_COLUMNS})
        conn.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in new_values])
    conn.execute(insert(llm_cost_audit), [_audit(ch, reprice_id, now) for ch in changes])


def _update_at_once(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One ``UPDATE ... FROM (VALUES ...)`` for the batch: the rollup's statement-level trigger then
    moves every touched rollup row in one upsert, in key order, as the writers' inserts do, so a
    reprice and a concurrent writer cannot deadlock on rollup rows."""
    money = Numeric(24, 12)
    columns: list[ColumnClause[Any]] = [
        column("run_id", String(64)), *(column(name, money) for name in ("input_cost", "output_cost", "total_cost")),
        column("price_source", String(256)), column("price_detail", String(1024)), column("saved_cost", money)]
    batch = values(*columns, name="v").data([tuple(row[col.name] for col in columns) for row in rows])
    # A VALUES column that is NULL in every row has no type in PostgreSQL (it becomes text): cast back.
    assigned = {name: cast(batch.c[name], llm_calls.c[name].type) for name in _COST_COLUMNS}
    conn.execute(update(llm_calls).where(llm_calls.c.run_id == batch.c.run_id).values(assigned))


def _audit(change: _Change, reprice_id: str, now: datetime) -> dict[str, Any]:
    old, new = change.old, change.new
    old_detail, new_detail = old.detail, new.detail
    if change.cache_hit:
        # A cache hit's cost stays 0; what changed is what it saved, which the audit has no column for.
        old_detail = _join(old.detail, f"saved_cost={_text(old.saved)}")
        new_detail = _join(new.detail, f"saved_cost={_text(new.saved)}"
                           + (f" ({change.saved_source})" if change.saved_source else ""))
    return {"reprice_id": reprice_id, "run_id": change.run_id, "repriced_at": now,
            "old_input_cost": old.input, "old_output_cost": old.output, "old_total_cost": old.total,
            "old_price_source": old.source, "old_price_detail": _fit(old_detail),
            "new_input_cost": new.input, "new_output_cost": new.output, "new_total_cost": new.total,
            "new_price_source": new.source, "new_price_detail": _fit(new_detail)}


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def _fit(detail: str | None) -> str | None:
    return detail if detail is None or len(detail) <= _DETAIL else detail[: _DETAIL - 1] + "…"


def _text(amount: Decimal | None) -> str:
    return "null" if amount is None else format(amount.normalize(), "f")


def _same(a: Decimal | None, b: Decimal | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= max(_ABSOLUTE, abs(b) * _RELATIVE)


def _aware(when: datetime) -> datetime:
    """SQLite gives back the UTC time it stored without its zone."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _utc(when: datetime) -> datetime:
    # SQLite compares the text of the wall-clock time: a bound must be in the zone the rows are stored in.
    return _aware(when).astimezone(timezone.utc)


__all__ = ["BATCH_SIZE", "Group", "Priced", "RepriceInterrupted", "Summary", "Window", "apply", "open_engine",
           "preview", "usage_of"]
