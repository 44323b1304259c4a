"""What a ``kill -9`` loses: events missing from the store after a burst, a pause, SIGKILL and a restart.

    python -m benchmarks.crash [--events 20000] [--quick]

A child process records a burst of LLM calls through the real hooks (``on_chat_model_start`` +
``on_llm_end``, as fast as one thread can), waits ``idle`` ms, and kills itself with SIGKILL. A second
process with the same settings starts, flushes (replaying what the journal holds) and exits; the rows
in the store are counted. With the journal off (``VITAL_JOURNAL=false``) and on, for SQLite and, when
``VITAL_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is reachable,
PostgreSQL. "Window" is the loss in ms of the burst's submissions (lost events / burst rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks._common import describe_machine
from vital_callbacks.store import migrate

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, os, signal, sys, time, uuid
from benchmarks.sql_throughput import MESSAGES, METADATA, RESULT, SERIALIZED
from vital_callbacks import VitalCallbackHandler

handler = VitalCallbackHandler()
if sys.argv[1] == "burst":
    n, idle = int(sys.argv[2]), float(sys.argv[3])
    warm_up = uuid.uuid4()  # connected, migrated, the price catalog loaded: outside the burst
    handler.on_chat_model_start(SERIALIZED, MESSAGES, run_id=warm_up, metadata=METADATA)
    handler.on_llm_end(RESULT, run_id=warm_up)
    assert handler.flush(60)
    start = time.perf_counter()
    for _ in range(n):
        run_id = uuid.uuid4()
        handler.on_chat_model_start(SERIALIZED, MESSAGES, run_id=run_id, metadata=METADATA)
        handler.on_llm_end(RESULT, run_id=run_id)
    print(f"rate {n / (time.perf_counter() - start):.1f}", flush=True)
    time.sleep(idle)
    os.kill(os.getpid(), signal.SIGKILL)
else:
    print("flushed", handler.flush(600), flush=True)
    stats = handler.stats()
    print("account", json.dumps({"dropped": stats["dropped_reasons"], "kept": stats["kept_in_journal"]}), flush=True)
"""


def _count_sqlite(url: str) -> int:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT COUNT(DISTINCT run_id) FROM llm_calls").fetchone()[0])


def _pg(url: str, sql: str) -> int:
    import asyncpg

    async def go() -> int:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
        try:
            return int(await conn.fetchval(sql) or 0)
        finally:
            await conn.close()

    return asyncio.run(go())


def one(url: str, count: str, n: int, idle_ms: int, journal: bool, tmp: Path) -> tuple[int, float]:
    """Events lost, and the burst's rate (events/s)."""
    env = {**os.environ, "VITAL_DATABASE_URL": url, "VITAL_SINKS": "sql", "VITAL_JOURNAL": str(journal).lower(),
           "VITAL_JOURNAL_DIR": str(tmp / "journal"), "VITAL_SPILL_DIR": str(tmp / "spill"),
           "PYTHONPATH": str(ROOT)}
    burst = subprocess.run([sys.executable, "-c", _CHILD, "burst", str(n), str(idle_ms / 1000)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    if burst.returncode != -signal.SIGKILL:
        raise SystemExit(f"the burst process did not end by SIGKILL:\n{burst.stderr[-3000:]}")
    rate = float(burst.stdout.split("rate", 1)[1].split()[0])
    replay = subprocess.run([sys.executable, "-c", _CHILD, "replay"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    if "flushed True" not in replay.stdout:
        # A kill can cut the journal's last write short: the next start counts those events lost, with
        # that reason and no other, and its flush says so. That is a loss this benchmark measures.
        account = json.loads(replay.stdout.split("account", 1)[1]) if "account" in replay.stdout else None
        reasons = account["dropped"].get("sql", {}) if account and len(account["dropped"]) == 1 else {}
        if (replay.returncode != 0 or "flushed False" not in replay.stdout or account is None
                or any(account["kept"].values()) or set(reasons) != {"damaged journal"}):
            raise SystemExit(f"the next start did not flush:\n{replay.stdout}\n{replay.stderr[-3000:]}")
        print(f"the next start counted {reasons['damaged journal']} events lost in a journal write the kill "
              "cut short", file=sys.stderr)
    stored = _count_sqlite(url) if count == "sqlite" else _pg(url, "SELECT COUNT(DISTINCT run_id) FROM llm_calls")
    return n + 1 - stored, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--idle-ms", default="0,100,300")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    n = 300 if args.quick else args.events
    idles = [300] if args.quick else [int(v) for v in args.idle_ms.split(",")]
    stores: list[tuple[str, str, str]] = []
    tmp_root = Path(tempfile.mkdtemp(prefix="vital-crash-"))
    server = os.environ.get("VITAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    pg_database = f"vital_crash_{uuid.uuid4().hex[:8]}"
    try:
        _pg(server, f"CREATE DATABASE {pg_database}")
        pg_url = server.rsplit("/", 1)[0] + "/" + pg_database
    except Exception as exc:
        print(f"PostgreSQL at {server} not reachable ({type(exc).__name__}); SQLite only", file=sys.stderr)
        pg_url = ""
    print(f"Machine: {describe_machine()}\n")
    print(f"### Crash: events lost by a kill -9 after a burst of {n:,} LLM calls\n")
    print("| store | idle before the kill | lost, journal off | lost, journal on | window, journal on |")
    print("|---|---:|---:|---:|---:|")
    try:
        stores.append(("SQLite", "sqlite", ""))
        if pg_url:
            stores.append(("PostgreSQL", "pg", pg_url))
        for name, count, url in stores:
            for idle in idles:
                lost: dict[bool, int] = {}
                rate = 0.0
                for journal in (False, True):
                    tmp = Path(tempfile.mkdtemp(dir=tmp_root))
                    store_url = url or f"sqlite:///{tmp / 'store.db'}"
                    migrate.upgrade(store_url)
                    if count == "pg":
                        _pg(store_url, "TRUNCATE llm_calls")
                    lost[journal], rate = one(store_url, count, n, idle, journal, tmp)
                    print(f"{name} idle {idle} ms journal {journal}: lost {lost[journal]}", file=sys.stderr)
                window = lost[True] / rate * 1000 if rate else 0.0
                print(f"| {name} | {idle} ms | {lost[False]:,} | {lost[True]:,} | {window:.0f} ms |")
    finally:
        if pg_url:
            _pg(server, f"DROP DATABASE IF EXISTS {pg_database} WITH (FORCE)")
        shutil.rmtree(tmp_root, ignore_errors=True)


if __name__ == "__main__":
    main()
