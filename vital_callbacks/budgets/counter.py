"""The shared, atomic spend counters that stop budgets reserve against before a call.

A reservation holds a call's worst-case cost from its start until it settles to the actual cost (or
is released on an error, or expires: a process that died, a cancelled call that never ended). It is
granted only if ``spent + reserved + amount <= limit`` for every stop budget covering the call, checked
and written in one transaction that holds the counter rows' locks (PostgreSQL ``SELECT ... FOR
UPDATE``; SQLite ``BEGIN IMMEDIATE``), so replicas and threads never both take the last dollar.

Keys are exact: the bucket is a hash of the full attribution value (a tenant id of any length), never a
stored column cut to its width. A period is its start: day and month roll over by themselves; a rolling
window sums hourly rows (so it may count up to one hour more than the window: it stops early, never late).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol

from vital_callbacks.budgets.model import Budget

RESERVATION_TTL_S = 900.0
"""A reservation not settled by then is not counted any more (a process that died, a call cancelled
without an end callback): longer than any LLM call."""


def budget_id(budget: Budget) -> str:
    """What identifies a budget's counters: its scope, match, period and name (not its amount, so a
    raised limit keeps the spend of the period)."""
    text = f"{budget.name}|{budget.scope}|{budget.match}|{budget.period}|{budget.hours}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def bucket_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def periods(budget: Budget, now: datetime) -> tuple[datetime, list[datetime]]:
    """The period row a call made ``now`` settles into, and every row its limit sums."""
    if budget.period != "rolling":
        start = budget.period_start(now)
        return start, [start]
    hour = now.replace(minute=0, second=0, microsecond=0)
    hours = budget.hours or 1
    # hours + 1 hourly rows, the current partial one included: at least the whole window (up to one hour
    # more), so it stops early, never late.
    return hour, [hour - timedelta(hours=h) for h in range(hours + 1)]


@dataclass(frozen=True)
class Claim:
    """One budget bucket a call is reserved against."""

    budget: Budget
    key: str
    amount: Decimal


@dataclass(frozen=True)
class Held:
    """A granted reservation: what :meth:`SpendCounter.settle` / ``release`` need."""

    reservation_id: str
    claims: tuple[Claim, ...]
    period_starts: tuple[datetime, ...]


@dataclass(frozen=True)
class Refusal:
    """The first claim that would pass its limit, and the spend (settled + reserved) it met."""

    claim: Claim
    spend: Decimal
    reason: str | None = None
    """Why, when it is not the limit (the counter cannot be reached, with ``on_store_error: closed``)."""


class SpendCounter(Protocol):
    def reserve(self, claims: Sequence[Claim], now: datetime) -> Held | Refusal: ...

    def settle(self, held: Held, actual: Decimal) -> None: ...

    def release(self, held: Held) -> None: ...

    def spent(self, budget: Budget, key: str, now: datetime) -> tuple[Decimal, Decimal]:
        """Settled and reserved spend of one bucket in the current period."""
        ...


class LocalCounter:
    """This process's own counters: for a runtime without a SQL store, and the fallback while the store
    is unreachable (``on_store_error: open``). Periods roll over by their start, as in the store."""

    def __init__(self, base: Callable[[Budget, str], Decimal] | None = None) -> None:
        self._lock = threading.Lock()
        self._spent: dict[tuple[str, str, datetime], Decimal] = {}
        self._held: dict[str, tuple[Held, datetime]] = {}
        self._base = base
        """What was spent before this counter took over (the fallback's: the spend last read from the
        store), so a replica falling back does not start from a fresh limit."""

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def reserve(self, claims: Sequence[Claim], now: datetime) -> Held | Refusal:
        with self._lock:
            self._expire(now)
            starts: list[datetime] = []
            for claim in claims:
                settled, reserved = self._sum(claim.budget, claim.key, now)
                if settled + reserved + claim.amount > claim.budget.amount_usd:
                    return Refusal(claim, settled + reserved)
                starts.append(periods(claim.budget, now)[0])
            held = Held(uuid.uuid4().hex, tuple(claims), tuple(starts))
            self._held[held.reservation_id] = (held, now + timedelta(seconds=RESERVATION_TTL_S))
            return held

    def settle(self, held: Held, actual: Decimal) -> None:
        with self._lock:
            self._held.pop(held.reservation_id, None)  # gone if it expired meanwhile: its cost still counts
            for claim, start in zip(held.claims, held.period_starts, strict=True):
                row = (budget_id(claim.budget), bucket_of(claim.key), start)
                self._spent[row] = self._spent.get(row, Decimal(0)) + actual

    def release(self, held: Held) -> None:
        with self._lock:
            self._held.pop(held.reservation_id, None)

    def holds(self, held: Held) -> bool:
        with self._lock:
            return held.reservation_id in self._held

    def spent(self, budget: Budget, key: str, now: datetime) -> tuple[Decimal, Decimal]:
        with self._lock:
            return self._sum(budget, key, now)

    def _sum(self, budget: Budget, key: str, now: datetime) -> tuple[Decimal, Decimal]:
        ident, bucket = budget_id(budget), bucket_of(key)
        settled = sum((self._spent.get((ident, bucket, start), Decimal(0)) for start in periods(budget, now)[1]),
                      Decimal(0))
        if self._base is not None:
            with contextlib.suppress(Exception):  # what is known of earlier spend is a floor, never a failure
                settled += self._base(budget, key)
        reserved = sum((c.amount for held, _ in self._held.values() for c in held.claims
                        if c.budget is budget or (budget_id(c.budget) == ident and bucket_of(c.key) == bucket)),
                       Decimal(0))
        return settled, reserved

    def _expire(self, now: datetime) -> None:
        for reservation_id in [r for r, (_, expires) in self._held.items() if expires <= now]:
            del self._held[reservation_id]


class SQLCounter:
    """Counters in the SQL store (``budget_spend``, ``budget_reservations``), shared by every replica
    writing there; the caller's thread waits for it only under a stop budget, bounded by ``timeout_s``."""

    def __init__(self, database_url: str, *, timeout_s: float = 2.0, auto_migrate: bool = False) -> None:
        self._url = database_url
        self._timeout_s = timeout_s
        self._auto_migrate = auto_migrate
        """A SQLite store migrated on first use: the first call of a process may come before the sink's
        worker has created the tables; the counter then migrates (once, under the first-start lock)."""
        self._engine: Any = None
        self._lock = threading.Lock()

    # -- engine --------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = _writer_engine(self._url, self._timeout_s)
        return self._engine.connect()

    def after_fork(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._lock = threading.Lock()

    def _begin(self, conn: Any) -> None:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now: no other reserver in between
        else:
            conn.exec_driver_sql("BEGIN")

    # -- the counter -----------------------------------------------------------------------------------
    def reserve(self, claims: Sequence[Claim], now: datetime) -> Held | Refusal:
        if self._auto_migrate:
            # Once: the schema is there (the sink's worker may be creating it right now; both take the same
            # first-start lock), so no reservation meets a store in the middle of its first migration. The
            # lock is waited for within the timeout; failing, this call is a counter error (and the next
            # call tries again).
            from vital_callbacks.store import migrate

            with migrate.first_start_lock(self._url, timeout_s=self._timeout_s):
                migrate.upgrade(self._url)
            self._auto_migrate = False
        return self._reserve(claims, now)

    def _reserve(self, claims: Sequence[Claim], now: datetime) -> Held | Refusal:
        from sqlalchemy import and_, delete, func, insert, select

        from vital_callbacks.store.schema import budget_reservations as res
        from vital_callbacks.store.schema import budget_spend as spend

        held = Held(uuid.uuid4().hex, tuple(claims), tuple(periods(c.budget, now)[0] for c in claims))
        expires = now + timedelta(seconds=RESERVATION_TTL_S)
        # Rows locked in one order by every reserver, so two calls covered by the same budgets never deadlock.
        ordered = sorted(zip(claims, held.period_starts, strict=True),
                         key=lambda item: (budget_id(item[0].budget), bucket_of(item[0].key)))
        with self._connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self._begin(conn)
            try:
                for claim, start in ordered:
                    ident, bucket = budget_id(claim.budget), bucket_of(claim.key)
                    _ensure_row(conn, ident, bucket, start, claim.key)
                    rows = select(func.coalesce(func.sum(spend.c.spent), 0)).where(
                        spend.c.budget_id == ident, spend.c.bucket == bucket,
                        spend.c.period_start.in_(periods(claim.budget, now)[1]))
                    if conn.dialect.name == "postgresql":
                        # One lock per budget and bucket, whatever the period: two reservers either side
                        # of an hour (or a day) would otherwise lock different rows of one window.
                        _advisory_lock(conn, ident, bucket)
                    settled = Decimal(str(conn.execute(rows).scalar_one()))
                    conn.execute(delete(res).where(res.c.budget_id == ident, res.c.bucket == bucket,
                                                   res.c.expires_at <= now))
                    reserved = Decimal(str(conn.execute(
                        select(func.coalesce(func.sum(res.c.amount), 0)).where(
                            and_(res.c.budget_id == ident, res.c.bucket == bucket))).scalar_one()))
                    if settled + reserved + claim.amount > claim.budget.amount_usd:
                        conn.exec_driver_sql("ROLLBACK")
                        return Refusal(claim, settled + reserved)
                conn.execute(insert(res), [
                    {"reservation_id": f"{held.reservation_id}:{i}", "budget_id": budget_id(c.budget),
                     "bucket": bucket_of(c.key), "period_start": start, "amount": c.amount, "expires_at": expires}
                    for i, (c, start) in enumerate(zip(claims, held.period_starts, strict=True))])
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
        return held

    def settle(self, held: Held, actual: Decimal) -> None:
        from sqlalchemy import delete, update

        from vital_callbacks.store.schema import budget_reservations as res
        from vital_callbacks.store.schema import budget_spend as spend

        ids = [f"{held.reservation_id}:{i}" for i in range(len(held.claims))]
        # Rows in the order reserve() takes them, so a settle and a reservation never deadlock.
        ordered = sorted(zip(held.claims, held.period_starts, strict=True),
                         key=lambda item: (budget_id(item[0].budget), bucket_of(item[0].key)))
        with self._connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                # The reservers' lock: a settle must not land between a reserver's two sums (it would
                # read the spend before and the reservations after it, missing the call in both).
                for claim, _ in ordered:
                    _advisory_lock(conn, budget_id(claim.budget), bucket_of(claim.key))
            # An expired reservation still settles: the call did spend.
            conn.execute(delete(res).where(res.c.reservation_id.in_(ids)))
            for claim, start in ordered:
                ident, bucket = budget_id(claim.budget), bucket_of(claim.key)
                _ensure_row(conn, ident, bucket, start, claim.key)
                conn.execute(update(spend).where(spend.c.budget_id == ident, spend.c.bucket == bucket,
                                                 spend.c.period_start == start)
                             .values(spent=spend.c.spent + actual))

    def release(self, held: Held) -> None:
        from sqlalchemy import delete

        from vital_callbacks.store.schema import budget_reservations as res

        ids = [f"{held.reservation_id}:{i}" for i in range(len(held.claims))]
        with self._connect() as conn, conn.begin():
            conn.execute(delete(res).where(res.c.reservation_id.in_(ids)))

    def spent(self, budget: Budget, key: str, now: datetime) -> tuple[Decimal, Decimal]:
        from sqlalchemy import func, select

        from vital_callbacks.store.schema import budget_reservations as res
        from vital_callbacks.store.schema import budget_spend as spend

        ident, bucket = budget_id(budget), bucket_of(key)
        with self._connect() as conn:
            settled = conn.execute(select(func.coalesce(func.sum(spend.c.spent), 0)).where(
                spend.c.budget_id == ident, spend.c.bucket == bucket,
                spend.c.period_start.in_(periods(budget, now)[1]))).scalar_one()
            reserved = conn.execute(select(func.coalesce(func.sum(res.c.amount), 0)).where(
                res.c.budget_id == ident, res.c.bucket == bucket, res.c.expires_at > now)).scalar_one()
        return Decimal(str(settled)), Decimal(str(reserved))


def _advisory_lock(conn: Any, ident: str, bucket: str) -> None:
    """PostgreSQL: the transaction's lock on one budget bucket, whatever the period (released at its end)."""
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))",
                         {"k": f"vital-budget:{ident}:{bucket}"})


def _ensure_row(conn: Any, ident: str, bucket: str, start: datetime, label: str) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from vital_callbacks.store.schema import NAME
    from vital_callbacks.store.schema import budget_spend as spend

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(spend).values(budget_id=ident, bucket=bucket, period_start=start, spent=Decimal(0),
                                              bucket_label=label[:NAME]).on_conflict_do_nothing())


def _writer_engine(url: str, timeout_s: float) -> Any:
    """A small read-write engine for the counters, every wait bounded by ``timeout_s``."""
    from sqlalchemy import create_engine

    from vital_callbacks.store.engine import make_engine, sync_url

    url = sync_url(url)
    if url.startswith("postgresql"):
        ms = max(1, int(timeout_s * 1000))
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=timeout_s,
                             connect_args={"connect_timeout": max(1, int(timeout_s + 0.999)),
                                           "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                                           "keepalives_count": 2, "tcp_user_timeout": ms,
                                           "application_name": "vital-callbacks-budgets",
                                           "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"})
    from sqlalchemy import event

    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _busy_timeout(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute(f"PRAGMA busy_timeout = {max(1, int(timeout_s * 1000))}")

    return engine


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
