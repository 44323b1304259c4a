"""Keeps each budget's spend and answers "may this call go ahead?".

A ``stop`` budget is enforced before the call: its worst-case cost is reserved against a shared,
atomic counter (:mod:`vital_callbacks.budgets.counter`: Redis, the SQL store, or this process alone),
and settled to the actual cost when the call ends, off the caller's thread. So replicas and threads
together never pass the limit while calls stay within their reservation.

``warn`` budgets, the metrics and ``vital-callbacks budgets`` use the spend summed from the SQL store
(on the guard's own thread, never the caller's), kept current from this process's own priced calls
and re-summed every ``VITAL_BUDGET_REFRESH_S``.

One guard per runtime: budgets given to a handler in code are added to it once, and the handler
enforces only its own and the file's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from vital_callbacks.budgets.counter import (
    Claim,
    Held,
    LocalCounter,
    Refusal,
    SpendCounter,
    SQLCounter,
    budget_id,
    utcnow,
)
from vital_callbacks.budgets.metrics import BudgetMetrics
from vital_callbacks.budgets.model import NEAR_LIMIT_REFRESH_S, Budget, BudgetExceeded, BudgetStatus
from vital_callbacks.budgets.redis_counter import RedisCounter
from vital_callbacks.budgets.stored import no_tables_yet, spend_by_bucket, stored_run_ids

logger = logging.getLogger("vital_callbacks")

_COUNTER_RETRY_S = 5.0
"""After the shared counter failed, calls use the fallback at once for this long (no wait per call)."""
_SETTLE_RETRY_S = 1.0
_SETTLE_ATTEMPTS = 30
"""A settle the counter refused is tried again each second, this many times (within the reservation's
lifetime), before its reservation is left to expire."""


def _counter(database_url: str | None, redis_url: str | None, timeout_s: float, auto_migrate: bool) -> SpendCounter:
    """Redis when configured, else the SQL store this runtime writes to, else this process alone.
    Building one connects to nothing (construction never waits on the store)."""
    if redis_url:
        try:
            return RedisCounter(redis_url, timeout_s=timeout_s)
        except ImportError:
            logger.error("vital-callbacks: VITAL_BUDGET_REDIS_URL needs the redis package: pip install "
                         "'vital-callbacks[redis]'; budgets reserve in the SQL store or this process instead")
    if database_url:
        return SQLCounter(database_url, timeout_s=timeout_s, auto_migrate=auto_migrate)
    return LocalCounter()


class BudgetGuard:
    """Keeps each budget's current-period spend and answers "may this call go ahead?"."""

    def __init__(self, budgets: Sequence[Budget] = (), *, database_url: str | None = None,
                 refresh_s: float = 10.0, timeout_s: float = 2.0, redis_url: str | None = None,
                 auto_migrate: bool = False, max_metric_keys: int = 100) -> None:
        self.budgets: list[Budget] = []
        self.stop_budgets: list[Budget] = []
        self._index: dict[Budget, int] = {}
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
        self._metrics = BudgetMetrics.create(self._spend_view, max_keys=max_metric_keys)
        self._thread: threading.Thread | None = None
        self._store_failing = False
        self._busy = threading.Lock()
        self._pid = os.getpid()
        self.counter: SpendCounter = _counter(database_url, redis_url, timeout_s, auto_migrate)
        """Where stop budgets reserve: Redis, the SQL store shared by the replicas, or this process's own."""
        self._fallback = LocalCounter(base=self._known_spend)
        self._counter_down_until = 0.0
        self._counter_failing = False
        self.counter_errors = 0
        """Reservations the shared counter could not answer (each went on, or was refused, by policy)."""
        self._settles: deque[tuple[Held, Decimal | None, int]] = deque()
        self._settle_wake = threading.Event()
        self._settle_idle = threading.Event()
        self._settle_idle.set()
        self._settler: threading.Thread | None = None
        self.everyone: tuple[int, ...] = self.add(budgets)
        """The budgets every handler enforces (``VITAL_BUDGETS_FILE``)."""

    def add(self, budgets: Sequence[Budget]) -> tuple[int, ...]:
        """Keep (once) the spend of ``budgets`` and return their indices: what a handler given them in
        code enforces. Spend is a property of the budget and its key, shared by every handler; no
        thread or query per call of this. The first budget starts the refresh thread, whose first
        refresh reads the store (so a hung store never blocks the caller)."""
        indices: list[int] = []
        with self._lock:
            for budget in budgets:
                index = self._index.get(budget)
                if index is None:
                    index = self._index[budget] = len(self.budgets)
                    self.budgets.append(budget)
                    if budget.action == "stop":
                        self.stop_budgets.append(budget)
                indices.append(index)
            start = self.budgets and self._database_url is not None and self._thread is None
            if start:
                self._thread = threading.Thread(target=self._refresh_loop, name="vital-budgets", daemon=True)
        if start and self._thread is not None:
            self._thread.start()
        return tuple(indices)

    def quiesce(self, deadline: float) -> list[threading.Lock]:
        """Before ``fork()``: wait for a refresh under way to finish (see ``Pipeline.quiesce``)."""
        return [self._busy] if self._busy.acquire(timeout=max(0.0, deadline - time.monotonic())) else []

    def after_fork(self) -> None:
        """In a forked child: a new refresh thread, and the parent's connections left alone."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._wake = threading.Event()
        self._settles = deque()  # the parent's to settle
        self._fallback.after_fork()
        if isinstance(self.counter, LocalCounter):
            self.counter.after_fork()
        self._settle_wake, self._settle_idle, self._settler = threading.Event(), threading.Event(), None
        self._settle_idle.set()
        if isinstance(self.counter, (SQLCounter, RedisCounter)):
            self.counter.after_fork()
        if self._engine is not None:
            self._engine.dispose(close=False)
        had_thread, self._thread = self._thread is not None, None
        if had_thread:
            self._thread = threading.Thread(target=self._refresh_loop, name="vital-budgets", daemon=True)
            self._thread.start()

    # -- hot path ----------------------------------------------------------------------------------
    def reserve(self, tenant: str | None, user: str | None, graph: str | None, amount: Decimal,
                only: Sequence[int] | None = None) -> Held | None:
        """Before a call: hold ``amount`` (its worst-case cost) against every ``stop`` budget covering
        it, atomically across replicas, or raise :class:`BudgetExceeded`. ``None``: no stop budget
        covers the call. The one wait on I/O of the hot path, bounded by ``VITAL_BUDGET_TIMEOUT_S``;
        after a failure the shared counter is left alone for a few seconds (no wait per call)."""
        claims = self._claims(tenant, user, graph, amount, only)
        if not claims:
            return None
        now = utcnow()
        if time.monotonic() < self._counter_down_until:
            answer = self._without_counter(claims, now, None)
        else:
            try:
                answer = self.counter.reserve(claims, now)
                if self._counter_failing:
                    self._counter_failing = False
                    logger.info("vital-callbacks: budget reservations reach the shared counter again")
            except Exception as exc:
                self._counter_down_until = time.monotonic() + _COUNTER_RETRY_S
                answer = self._without_counter(claims, now, exc)
        if isinstance(answer, Refusal):
            budget, key = answer.claim.budget, answer.claim.key
            with self._lock:
                self.exceeded_total += 1
            self._metrics.exceeded(budget, key)
            raise BudgetExceeded(budget, key, answer.spend, reason=answer.reason)
        return answer

    def _claims(self, tenant: str | None, user: str | None, graph: str | None, amount: Decimal,
                only: Sequence[int] | None) -> list[Claim]:
        """One claim per counter: budgets that differ only in amount or action share a counter, and
        the call is held against the smallest of their limits, once."""
        found: dict[tuple[str, str], Claim] = {}
        for index, budget in enumerate(self.budgets):
            if budget.action != "stop" or (only is not None and index not in only):
                continue
            key = budget.key_for(tenant, user, graph)
            if key is None:
                continue
            ident = (budget_id(budget), key)
            kept = found.get(ident)
            if kept is None or budget.amount_usd < kept.budget.amount_usd:
                found[ident] = Claim(budget, key, amount)
        return list(found.values())

    def _without_counter(self, claims: list[Claim], now: datetime, exc: Exception | None) -> Held | Refusal:
        """The shared counter did not answer: each budget's ``on_store_error`` decides."""
        with self._lock:
            self.counter_errors += 1
            first = not self._counter_failing
            self._counter_failing = True
        if first:  # one line per outage, never a traceback per call
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}" if exc else "-"
            logger.error("vital-callbacks: budget reservations cannot reach the shared counter (%s); stop budgets "
                         "with on_store_error: open use this process's own counter (from the spend last read), "
                         "closed ones refuse calls, until it answers", detail)
        self._metrics.counter_error()
        closed = next((c for c in claims if c.budget.on_store_error == "closed"), None)
        if closed is not None:
            return Refusal(closed, Decimal(0), reason="its spend counter cannot be reached (on_store_error: closed)")
        return self._fallback.reserve(claims, now)

    def _known_spend(self, budget: Budget, key: str) -> Decimal:
        """The fallback's floor: the spend last read from the store plus this process's own since."""
        index = self._index.get(budget)
        return Decimal(0) if index is None else self._spend(index, key)

    def settle(self, held: Held | None, actual: Decimal | None) -> None:
        """After the call: its actual cost replaces the reservation (``None``: released, nothing spent).
        Off the caller's thread; the reservation keeps counting until it is done."""
        if held is None:
            return
        with self._lock:
            self._settles.append((held, actual, 0))
            self._settle_idle.clear()
            if self._settler is None:
                self._settler = threading.Thread(target=self._settle_loop, name="vital-budget-settle", daemon=True)
                self._settler.start()
        self._settle_wake.set()

    def _settle_loop(self) -> None:
        while True:
            self._settle_wake.wait(_SETTLE_RETRY_S)
            self._settle_wake.clear()
            retry: list[tuple[Held, Decimal | None, int]] = []
            while True:
                with self._lock:
                    if not self._settles:
                        self._settles.extend(retry)
                        if not self._settles:
                            self._settle_idle.set()
                        break
                    held, actual, attempts = self._settles.popleft()
                counter: SpendCounter = self._fallback if self._fallback.holds(held) else self.counter
                try:
                    if actual is None:
                        counter.release(held)
                    else:
                        counter.settle(held, actual)
                except Exception as exc:
                    if attempts + 1 < _SETTLE_ATTEMPTS and not self._stop.is_set():
                        retry.append((held, actual, attempts + 1))  # the reservation keeps counting meanwhile
                    else:
                        logger.warning("vital-callbacks: settling a budget reservation failed %d times (%s); it "
                                       "expires on its own and its cost is not in the counter", attempts + 1,
                                       type(exc).__name__)
            if self._stop.is_set() and self._settle_idle.is_set():
                return

    def drain(self, timeout_s: float) -> bool:
        """Wait (up to ``timeout_s``) for the settles in hand: at shutdown, so a process that exits has
        counted what it spent."""
        return self._settle_idle.wait(timeout_s)

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
    def _spend_view(self) -> list[tuple[Budget, list[tuple[str, Decimal]]]]:
        """Each budget's keys and spend as this process knows them (for the metrics, at scrape time)."""
        with self._lock:
            known = {*self._base, *self._local}
            out: list[tuple[Budget, list[tuple[str, Decimal]]]] = []
            for index, budget in enumerate(self.budgets):
                keys = [k for (i, k) in known if i == index]
                out.append((budget, [(k, self._base.get((index, k), Decimal(0)) + self._local.get((index, k),
                                                                                                   Decimal(0)))
                                     for k in keys]))
            return out

    def _spend(self, index: int, key: str) -> Decimal:
        return self._base.get((index, key), Decimal(0)) + self._local.get((index, key), Decimal(0))

    def _evaluate(self, index: int, budget: Budget, key: str) -> None:
        spend = self._spend(index, key)
        now = datetime.now(timezone.utc)
        start = budget.period_start(now)
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
            stored = stored_run_ids(self._reader(), list(pending))
            base = spend_by_bucket(self._reader(), self.budgets)
        except Exception as exc:
            if no_tables_yet(exc):  # a fresh store the sink has not migrated yet: nothing spent there
                logger.debug("vital-callbacks: no spend tables in the store yet")
                return
            if not self._store_failing:  # once per outage: this runs every 50 ms near a limit
                logger.warning("vital-callbacks: could not read budget spend from the store (%s: %s); using this "
                               "process's spend only until it answers", type(exc).__name__, str(exc).splitlines()[0])
            self._store_failing = True
            return
        if self._store_failing:
            logger.info("vital-callbacks: budget spend is read from the store again")
            self._store_failing = False
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
            from vital_callbacks.store.engine import reader_engine

            self._engine = reader_engine(self._database_url or "")
        return self._engine

    def _refresh_loop(self) -> None:
        with self._busy:
            self.refresh()  # the first read of the store's spend, here rather than on the caller's thread
        while not self._stop.is_set() and self._refresh_s > 0:
            self._wake.wait(self._next_refresh_s())
            self._wake.clear()
            if not self._stop.is_set():
                with self._busy:
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

    def close(self, timeout_s: float = 2.0) -> None:
        self.drain(timeout_s)
        self._stop.set()
        self._wake.set()
        self._settle_wake.set()

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
                spend, reserved = self._spend(index, key), None
                if budget.action == "stop":
                    spend, reserved = self._counted(budget, key, now, spend)
                projected = spend if budget.period == "rolling" else spend * Decimal(length / elapsed)
                rows.append(BudgetStatus(budget, key, spend, budget.amount_usd, projected, start, reserved))
        return rows

    def _counted(self, budget: Budget, key: str, now: datetime, summed: Decimal) -> tuple[Decimal, Decimal | None]:
        """A stop budget's spend as its counter has it (what reservations are checked against), at least
        what the store's rows sum to; and what is reserved now."""
        try:
            settled, reserved = self.counter.spent(budget, key, now)
        except Exception:
            return summed, None
        return max(settled, summed), reserved
