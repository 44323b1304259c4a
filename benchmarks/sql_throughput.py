"""Sustained LLM-call rows/s into PostgreSQL and SQLite through the real pipeline, and caller-side cost.

    python -m benchmarks.sql_throughput [--events 20000] [--rounds 3]

Three ways of writing the same kind of rows, interleaved round by round so the machine's state is
shared fairly, each with fresh run ids into an emptied table:

* ``bare executemany``: the baseline. Rows built in advance, inserted with the driver's
  ``executemany`` in transactions of ``batch_size`` (asyncpg for PostgreSQL, sqlite3 for SQLite).
* ``queue -> sink``: enriched events submitted to a ``Pipeline`` with no processors, so the figure is
  the sink's own speed (row building, COPY / insert, commit) behind the queue.
* ``handler -> queue -> sink``: the real thing: ``on_chat_model_start`` + ``on_llm_end`` on the caller's
  thread, pricing on the dispatcher, the SQL sink on its worker; rows/s until ``flush()`` returns.
  Caller-side p50 / p99 are per event (both hooks). Run twice per round, with the durable journal
  (``VITAL_JOURNAL``, the default) and without, so its cost is a ratio from one run.

PostgreSQL comes from ``VITAL_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
a scratch database is created next to it and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.utils.uuid import uuid7
from msgspec.structs import replace

from vital_callbacks import LLMCall, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.enrich import Enricher
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.runtime.pipeline import Pipeline
from vital_callbacks.runtime.registry import sink_class
from vital_callbacks.store import migrate as db
from vital_callbacks.store.rows import to_row

BATCH = 512
WARM_UP = """Each run first delivers one event and flushes, outside the clock: the figure is sustained
throughput, not the ~80 ms of a new pipeline's first batch (connecting, the driver learning the
table's column types), which would be 7% of a 20,000-row run."""
SERIALIZED: dict[str, Any] = {"name": "ChatOpenAI"}
MESSAGES = [[HumanMessage("how much does this cost?")]]
METADATA = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", "tenant_id": "acme"}
RESULT = LLMResult(generations=[[ChatGeneration(message=AIMessage(
    "it depends", usage_metadata={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150},
    response_metadata={"model_name": "gpt-4o-mini", "finish_reason": "stop"}))]])
COLUMNS: list[str] = []


class Backend:
    """One database: how to empty it, count rows, and run the bare baseline."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    def reset(self) -> None:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def bare(self, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError


class Postgres(Backend):
    def _run(self, fn: Callable[[asyncpg.Connection], Any]) -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(self.url.replace("+asyncpg", ""))
            try:
                return await fn(conn)
            finally:
                await conn.close()
        return asyncio.run(go())

    def reset(self) -> None:
        self._run(lambda c: c.execute("TRUNCATE llm_calls"))

    def count(self) -> int:
        return int(self._run(lambda c: c.fetchval("SELECT COUNT(*) FROM llm_calls")))

    def bare(self, rows: list[tuple[Any, ...]]) -> None:
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        params = ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
        sql = f"INSERT INTO llm_calls ({cols}) VALUES ({params}) ON CONFLICT DO NOTHING"

        async def insert(conn: asyncpg.Connection) -> None:
            for start in range(0, len(rows), BATCH):
                async with conn.transaction():
                    await conn.executemany(sql, rows[start:start + BATCH])
        self._run(insert)


class SQLite(Backend):
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def reset(self) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM llm_calls")

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0])

    def bare(self, rows: list[tuple[Any, ...]]) -> None:
        cols = ", ".join(COLUMNS)
        sql = f"INSERT INTO llm_calls ({cols}) VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING"
        plain = [tuple(_sqlite_value(v) for v in row) for row in rows]
        conn = self._connect()
        for start in range(0, len(plain), BATCH):
            with conn:
                conn.executemany(sql, plain[start:start + BATCH])
        conn.close()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, Decimal):
        return float(value)
    return value


def enriched_calls(n: int) -> list[LLMCall]:
    enricher = Enricher(PriceBook([]))
    now = time.time()
    out = []
    for _ in range(n):
        run_id = str(uuid.uuid4())
        event = LLMCall(run_id=run_id, parent_run_id=None, trace_id=run_id, tenant_id="acme", start_time=now,
                        end_time=now + 0.2, duration_s=0.2, provider="openai", model="gpt-4o-mini",
                        usage=TokenUsage(input=120, output=30, total=150))
        priced = enricher(event)
        assert isinstance(priced, LLMCall)
        out.append(priced)
    return out


def run_bare(backend: Backend, n: int) -> float:
    rows = [tuple(to_row(e).get(c) for c in COLUMNS) for e in enriched_calls(n)]
    backend.reset()
    start = time.perf_counter()
    backend.bare(rows)
    elapsed = time.perf_counter() - start
    assert backend.count() == n
    return n / elapsed


def settings_for(backend: Backend, spill: Path, n: int, journal: bool = False) -> Settings:
    return Settings(database_url=backend.url, sinks=["sql"], spill_dir=spill, database_auto_migrate=False,
                    queue_size=max(100_000, n + 1), batch_size=BATCH, journal=journal,
                    journal_dir=spill / "journal")


def run_sink_only(backend: Backend, n: int, spill: Path) -> float:
    calls = [replace(e, run_id=str(uuid.uuid4())) for e in enriched_calls(n + 1)]
    backend.reset()
    pipeline = Pipeline([sink_class("sql").from_settings(settings_for(backend, spill, n))],
                        queue_size=n + 1, batch_size=BATCH, flush_interval_s=0.05)
    pipeline.submit(calls.pop())  # warm-up (see WARM_UP)
    assert pipeline.flush(60)
    start = time.perf_counter()
    for call in calls:
        pipeline.submit(call)
    assert pipeline.flush(600)
    elapsed = time.perf_counter() - start
    pipeline.shutdown()
    assert backend.count() == n + 1
    return n / elapsed


def run_handler(backend: Backend, n: int, spill: Path, journal: bool) -> tuple[float, list[int]]:
    backend.reset()
    handler = VitalCallbackHandler(settings_for(backend, spill, n, journal))
    warm_up = uuid.uuid4()  # see WARM_UP
    handler.on_chat_model_start(SERIALIZED, MESSAGES, run_id=warm_up, metadata=METADATA)
    handler.on_llm_end(RESULT, run_id=warm_up)
    assert handler.flush(60)
    latencies = [0] * n
    clock = time.perf_counter_ns
    new_id = uuid7
    start = time.perf_counter()
    for i in range(n):
        # A new id per run, made the way LangChain's callback manager makes it (``uuid7``), so it dies
        # with its run: a list of 20,000 ids made up front would outlive them all and feed the garbage
        # collector's oldest generation. (``uuid.uuid4`` would also be wrong here: its ``os.urandom``
        # releases the GIL on every call, which LangChain's id never does.)
        run_id = new_id()
        t0 = clock()
        handler.on_chat_model_start(SERIALIZED, MESSAGES, run_id=run_id, metadata=METADATA)
        handler.on_llm_end(RESULT, run_id=run_id)
        latencies[i] = clock() - t0
    assert handler.flush(600)
    elapsed = time.perf_counter() - start
    handler.shutdown()
    assert backend.count() == n + 1
    return n / elapsed, latencies


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def bench(backend: Backend, n: int, rounds: int, target: int) -> None:
    bare: list[float] = []
    sink: list[float] = []
    full: dict[bool, list[float]] = {False: [], True: []}
    latencies: dict[bool, list[int]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as spill:
        for round_ in range(rounds):
            bare.append(run_bare(backend, n))
            sink.append(run_sink_only(backend, n, Path(spill)))
            for journal in (False, True) if round_ % 2 == 0 else (True, False):
                rate, lat = run_handler(backend, n, Path(spill), journal)
                full[journal].append(rate)
                latencies[journal].extend(lat)
    base = statistics.median(bare)
    print(f"\n{backend.name}: {n:,} LLM-call rows per run, {rounds} rounds interleaved, medians")
    for label, values in (("bare executemany (baseline)", bare), ("queue -> sink (no pricing)", sink),
                          ("handler -> queue -> sink", full[False]),
                          ("  the same, journal on", full[True])):
        rate = statistics.median(values)
        print(f"  {label:30s} {rate:>9,.0f} rows/s  {rate / base:5.2f}x baseline  "
              f"(rounds {min(values):,.0f}-{max(values):,.0f})")
    on, off = statistics.median(full[True]), statistics.median(full[False])
    print(f"  journal on / off: {on / off:.2f}x rows/s; caller p99 {percentile(latencies[True], 0.99):.1f} us on, "
          f"{percentile(latencies[False], 0.99):.1f} us off "
          f"({percentile(latencies[True], 0.99) / percentile(latencies[False], 0.99):.2f}x)")
    print(f"  target handler -> sink >= {target:,} rows/s (journal on): {'met' if on >= target else 'NOT met'}")
    print(f"  caller-side per event (on_chat_model_start + on_llm_end), journal on: "
          f"p50 {percentile(latencies[True], 0.5):.1f} us, p99 {percentile(latencies[True], 0.99):.1f} us "
          "(target p99 < 50 us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    from vital_callbacks.store import schema as tables

    COLUMNS.extend(c.name for c in tables.llm_calls.columns)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db.upgrade(url)
        bench(SQLite("SQLite", url), args.events, args.rounds, 10_000)
    if args.skip_postgres:
        return
    import os

    server = os.environ.get("VITAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"vital_bench_{uuid.uuid4().hex[:8]}"
    admin = Postgres("admin", server)
    admin._run(lambda c: c.execute(f"CREATE DATABASE {name}"))
    try:
        url = server.rsplit("/", 1)[0] + "/" + name
        db.upgrade(url)
        bench(Postgres("PostgreSQL", url), args.events, args.rounds, 20_000)
    finally:
        admin._run(lambda c: c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


if __name__ == "__main__":
    main()
