"""What a stop budget's reservation costs the caller: p50 / p99 per LLM call, beside a call with no budget.

    python -m benchmarks.budgets [--calls 2000] [--quick]

The same instant fake chat model is invoked through LangChain with our handler (in-memory sink only, so
the figure is the budget's own cost): no budget, then a stop budget whose counter is in this process,
in SQLite, in PostgreSQL (``VITAL_BENCH_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``,
when reachable) and in Redis (``VITAL_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/0``, when
reachable). Blocks interleaved round by round; the limit is never reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks._common import describe_machine
from vital_callbacks import Budget, InMemorySink, Settings, VitalCallbackHandler
from vital_callbacks.budgets.counter import LocalCounter, SpendCounter, SQLCounter
from vital_callbacks.budgets.redis_counter import RedisCounter
from vital_callbacks.store import migrate
from vital_callbacks.testing.fakes import ScriptedChatModel

PRICING = """
models:
  - provider: "*"
    model: bench-model
    prices:
      - input_mtok: 1
        output_mtok: 2
"""


def _pg(server: str, sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(server.replace("+asyncpg", ""), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def counters(tmp: Path) -> tuple[dict[str, Callable[[], SpendCounter]], Callable[[], None]]:
    sqlite_url = f"sqlite:///{tmp / 'budgets.db'}"
    migrate.upgrade(sqlite_url)
    found: dict[str, Callable[[], SpendCounter]] = {"in-process": LocalCounter,
                                                    "SQLite": lambda: SQLCounter(sqlite_url)}
    cleanup: list[Callable[[], None]] = []
    server = os.environ.get("VITAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"vital_bench_budgets_{uuid.uuid4().hex[:8]}"
    try:
        _pg(server, f"CREATE DATABASE {name}")
        pg_url = server.rsplit("/", 1)[0] + "/" + name
        migrate.upgrade(pg_url)
        found["PostgreSQL"] = lambda: SQLCounter(pg_url)
        cleanup.append(lambda: _pg(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    except Exception as exc:
        print(f"PostgreSQL at {server} not reachable ({type(exc).__name__}); skipped", file=sys.stderr)
    redis_url = os.environ.get("VITAL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
        prefix = f"vital-bench:{uuid.uuid4().hex}:"
        found["Redis"] = lambda: RedisCounter(redis_url, prefix=prefix)
    except Exception as exc:
        print(f"Redis at {redis_url} not reachable ({type(exc).__name__}); skipped", file=sys.stderr)

    def clean() -> None:
        for step in cleanup:
            step()

    return found, clean


def handler_for(pricing: Path, counter: SpendCounter | None) -> VitalCallbackHandler:
    budgets = [] if counter is None else [Budget(scope="tenant", amount_usd=Decimal(10) ** 6, action="stop")]
    handler = VitalCallbackHandler(Settings(pricing_dir=pricing), sinks=[InMemorySink()], budgets=budgets)
    if counter is not None:
        handler.budgets.counter = counter
    return handler


def per_call(handler: VitalCallbackHandler, model: Any, n: int) -> list[float]:
    config = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}
    out = []
    for _ in range(n):
        start = time.perf_counter()
        model.invoke("how much will this cost?", config=config)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    calls, rounds = (20, 1) if args.quick else (args.calls, args.rounds)
    model = ScriptedChatModel(model_name="bench-model", provider="self", responses=["ok"], max_tokens=256)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        pricing = tmp / "pricing"
        pricing.mkdir()
        (pricing / "bench.yml").write_text(PRICING)
        found, clean = counters(tmp)
        cases: dict[str, VitalCallbackHandler] = {"no budget (baseline)": handler_for(pricing, None)}
        cases.update({f"stop budget, counter {name}": handler_for(pricing, make()) for name, make in found.items()})
        samples: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for handler in cases.values():  # warm up: connections, the catalog, the first migration
                per_call(handler, model, 5)
            for r in range(rounds):
                names = list(cases)
                for name in names[r % len(names):] + names[:r % len(names)]:
                    samples[name] += per_call(cases[name], model, calls // rounds or 1)
        finally:
            for handler in cases.values():
                handler.shutdown()
            clean()
    base = statistics.median(samples["no budget (baseline)"])
    print(f"Machine: {describe_machine()}\n")
    print(f"### Budgets: the caller's cost of a stop budget's reservation ({calls:,} calls per case)\n")
    print("| case | p50 per call | p99 per call | p50 added over no budget |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        ordered = sorted(values)
        p50, p99 = statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        print(f"| {name} | {p50 * 1e3:.3f} ms | {p99 * 1e3:.3f} ms | {(p50 - base) * 1e3:+.3f} ms |")


if __name__ == "__main__":
    main()
