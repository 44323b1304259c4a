"""Latency of the metrics API over 1,000,000 LLM-call rows in PostgreSQL, against bare SQL.

Loads the rows with COPY into a fresh database on the local server (``VITAL_BENCH_POSTGRES_URL``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``; dropped at the end), serves the API with
uvicorn on a loopback port, and times, request by request and interleaved round by round:

* ``GET /metrics/tenant/{id}?hours=720`` (a tenant token; totals, cost by model, graph-run outcomes)
  against the bare SQL of its main aggregate (one tenant's 30-day totals);
* ``GET /metrics/cost/daily?days=30`` (an admin token; every tenant) against the bare SQL of the
  same GROUP BY day.

Prints p50 / p95 of each and the API / bare-SQL ratio. The seeds' target is p95 under 100 ms.
The bare SQL scans ``llm_calls``; the API reads whole days from the daily rollup (migration 0004) and
only the partial days at the window's edges from ``llm_calls``. ``--revision 0003`` builds the schema
of before the rollup (covering indexes, every query on the raw rows) to show what the rollup is worth.

    python -m benchmarks.api_latency [--rows 1000000] [--requests 200] [--revision 0003]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from benchmarks._common import machine

BASE_URL = os.environ.get("VITAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TENANTS = [f"t{i:02d}" for i in range(50)]
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"),
          ("anthropic", "claude-sonnet-4-5")]
COLUMNS = ("run_id", "trace_id", "tenant_id", "user_id", "graph", "node", "started_at", "ended_at", "duration_s",
           "status", "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
           "reasoning_tokens", "provider", "model", "token_source", "total_cost", "streamed", "cache_hit")
DAILY_SQL = ("SELECT date(timezone('UTC', started_at)) AS day, count(*), sum(total_tokens), "
             "sum(total_cost) FROM llm_calls WHERE started_at >= %s AND started_at < %s GROUP BY 1 ORDER BY 1")
TENANT_SQL = ("SELECT count(*), sum(input_tokens), sum(output_tokens), sum(total_tokens), sum(total_cost), "
              "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) FROM llm_calls "
              "WHERE tenant_id = %s AND started_at >= %s AND started_at < %s")


def _dsn(url: str, database: str | None = None) -> str:
    url = url.replace("postgresql+asyncpg://", "postgresql://", 1).replace("postgresql+psycopg://", "postgresql://")
    return url if database is None else url.rpartition("/")[0] + "/" + database


@contextmanager
def fresh_database() -> Iterator[str]:
    import psycopg

    name = f"vital_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_dsn(BASE_URL), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield _dsn(BASE_URL, name)
    finally:
        with psycopg.connect(_dsn(BASE_URL), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def load(url: str, rows: int, now: datetime, revision: str) -> float:
    """Create the schema at ``revision`` and COPY ``rows`` LLM calls spread over the last 90 days (the
    rollup's trigger sums them as they land); returns seconds."""
    import psycopg

    from vital_callbacks.store import migrate as db

    db.upgrade(url, revision)
    rng = random.Random(6)
    start = time.perf_counter()
    span = 90 * 86400
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY llm_calls ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for i in range(rows):
                provider, model = MODELS[i % len(MODELS)]
                tenant = TENANTS[int(rng.paretovariate(1.2)) % len(TENANTS)]  # a few big tenants
                started = now - timedelta(seconds=rng.random() * span)
                duration = rng.lognormvariate(0, 0.6)
                inp, out = rng.randint(100, 4000), rng.randint(10, 800)
                copy.write_row((f"r{i}", f"t{i // 5}", tenant, f"{tenant}-u{i % 20}", f"agent{i % 10}",
                                f"node{i % 6}", started, started + timedelta(seconds=duration), duration,
                                "error" if i % 97 == 0 else "success", inp, out, inp + out, inp // 4, 0, 0, provider,
                                model, "provider", (inp * 0.15 + out * 0.6) / 1e6, False, False))
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
    return time.perf_counter() - start


@contextmanager
def serve(url: str, tokens: str) -> Iterator[str]:
    import uvicorn

    from vital_callbacks.server import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(database_url=url, tokens=tokens), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def measure(cases: Mapping[str, Callable[[], object]], requests: int, rounds: int = 10) -> dict[str, list[float]]:
    """Per-request seconds of each case; each round runs a block of every case, order rotating."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    per_round = max(1, requests // rounds)
    for name in names:  # warm-up: connections, plans, caches
        for _ in range(5):
            cases[name]()
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for _ in range(per_round):
                t0 = time.perf_counter()
                cases[name]()
                samples[name].append(time.perf_counter() - t0)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--revision", default="head", help="schema revision to build (0003: before the rollup)")
    args = parser.parse_args()

    import httpx
    import psycopg

    now = datetime.now(timezone.utc)
    with fresh_database() as url:
        print(f"loading {args.rows:,} LLM calls with COPY ...", flush=True)
        print(f"loaded in {load(url, args.rows, now, args.revision):.1f} s (schema revision {args.revision})")
        tenant = TENANTS[1]
        with serve(url, f"{tenant}:tok-tenant,*:tok-admin") as base, httpx.Client(base_url=base) as http, \
                psycopg.connect(url) as sql:
            as_tenant = {"Authorization": "Bearer tok-tenant"}
            as_admin = {"Authorization": "Bearer tok-admin"}
            month_ago = now - timedelta(days=30)
            day_start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)

            def api_tenant() -> None:
                http.get(f"/metrics/tenant/{tenant}", params={"hours": 720}, headers=as_tenant).raise_for_status()

            def api_daily() -> None:
                http.get("/metrics/cost/daily", params={"days": 30}, headers=as_admin).raise_for_status()

            def sql_tenant() -> None:
                sql.execute(TENANT_SQL, (tenant, month_ago, datetime.now(timezone.utc))).fetchall()

            def sql_daily() -> None:
                sql.execute(DAILY_SQL, (day_start, datetime.now(timezone.utc))).fetchall()

            calls = http.get(f"/metrics/tenant/{tenant}", params={"hours": 720}, headers=as_tenant).json()
            print(f"tenant {tenant}: {calls['totals']['calls']:,} calls in 30 days; "
                  f"all tenants: ~{args.rows * 30 // 90:,} calls in the daily window")
            samples = measure({"api_tenant": api_tenant, "sql_tenant": sql_tenant, "api_daily": api_daily,
                               "sql_daily": sql_daily}, args.requests)
    print(f"\n{machine()}")
    print(f"{'case':<38}{'p50 ms':>10}{'p95 ms':>10}")
    for name, label in (("api_tenant", "GET /metrics/tenant/{id}?hours=720"), ("sql_tenant", "  bare SQL (totals)"),
                        ("api_daily", "GET /metrics/cost/daily?days=30"), ("sql_daily", "  bare SQL (GROUP BY day)")):
        print(f"{label:<38}{_pct(samples[name], 0.5) * 1000:>10.1f}{_pct(samples[name], 0.95) * 1000:>10.1f}")
    for api, bare in (("api_tenant", "sql_tenant"), ("api_daily", "sql_daily")):
        p95 = _pct(samples[api], 0.95)
        print(f"{api}: p95 ratio API / bare SQL = {p95 / _pct(samples[bare], 0.95):.2f}x; "
              f"p95 {'under' if p95 < 0.1 else 'OVER'} the 100 ms target")


if __name__ == "__main__":
    main()
