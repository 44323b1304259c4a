"""Latency of the web UI's pages over 1,000,000 LLM-call rows in PostgreSQL, against a bare SQL baseline.

Loads the rows with COPY into a fresh database on the local server (as ``benchmarks.api_latency``
does, ``VITAL_BENCH_POSTGRES_URL``; dropped at the end), one graph run per five calls (200,000
requests), serves the UI and API with uvicorn on a loopback port, and times each page, whole (query
and HTML), request by request, blocks interleaved round by round: the overview (24 h and 30 days,
admin and one tenant), the trace list (first page, and a page 100 pages deep by its keyset cursor),
one trace, the live tail and its JSON endpoint, budgets and quality. Baseline: the bare SQL count of
the last 24 hours' calls, in the same run. Prints p50 / p95 per page and p95 / baseline; the issue's
target is every page under 300 ms p95.

    python -m benchmarks.ui_latency [--rows 1000000] [--requests 100]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote

from benchmarks._common import machine
from benchmarks.api_latency import TENANTS, _pct, fresh_database, load, measure, serve

GRAPH_COLUMNS = ("run_id", "trace_id", "tenant_id", "user_id", "session_id", "graph", "name", "started_at", "ended_at",
                 "duration_s", "status", "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens",
                 "cache_write_tokens", "reasoning_tokens", "cost_usd", "llm_calls", "unpriced_calls", "interrupts",
                 "resumed")


def load_graph_runs(url: str, rows: int, now: datetime) -> float:
    """One graph run per five LLM calls (their ``trace_id`` is ``t{i // 5}``), over the same 90 days."""
    import psycopg

    rng = random.Random(7)
    start = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY graph_runs ({', '.join(GRAPH_COLUMNS)}) FROM STDIN") as copy:
            for k in range(rows // 5):
                tenant = TENANTS[int(rng.paretovariate(1.2)) % len(TENANTS)]
                started = now - timedelta(seconds=rng.random() * 90 * 86400)
                duration = rng.lognormvariate(1, 0.6)
                inp, out = rng.randint(500, 20000), rng.randint(50, 4000)
                copy.write_row((f"t{k}", f"t{k}", tenant, f"{tenant}-u{k % 20}", f"s{k % 1000}", f"agent{k % 10}",
                                f"agent{k % 10}", started, started + timedelta(seconds=duration), duration,
                                "error" if k % 53 == 0 else "success", inp, out, inp + out, inp // 4, 0, 0,
                                (inp * 0.15 + out * 0.6) / 1e6, 5, 0, 0, False))
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE graph_runs")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()

    import httpx
    import psycopg

    now = datetime.now(timezone.utc)
    with fresh_database() as url:
        print(f"loading {args.rows:,} LLM calls and {args.rows // 5:,} graph runs with COPY ...", flush=True)
        seconds = load(url, args.rows, now, "head") + load_graph_runs(url, args.rows, now)
        print(f"loaded in {seconds:.1f} s")
        tenant = TENANTS[1]
        with serve(url, f"{tenant}:tok-tenant,*:tok-admin") as base, psycopg.connect(url) as sql, \
                httpx.Client(base_url=base, cookies={"vital_token": "tok-admin"}) as admin, \
                httpx.Client(base_url=base, cookies={"vital_token": "tok-tenant"}) as mine:
            deep = _deep_cursor(admin)
            trace = f"t{args.rows // 10}"  # a request of the middle of the range

            def get(client: httpx.Client, path: str) -> Callable[[], None]:
                def fetch() -> None:
                    response = client.get(path)
                    response.raise_for_status()
                    assert response.content

                return fetch

            def baseline() -> None:
                sql.execute("SELECT count(*) FROM llm_calls WHERE started_at >= %s",
                            (datetime.now(timezone.utc) - timedelta(hours=24),)).fetchall()

            cases: dict[str, Callable[[], None]] = {
                "overview 24h (admin)": get(admin, "/"),
                "overview 30d (admin)": get(admin, "/?window=30d"),
                "overview 30d (tenant)": get(mine, "/?window=30d"),
                "traces, first page": get(admin, "/traces"),
                "traces, 100 pages deep": get(admin, f"/traces?window=30d&before={quote(deep, safe='')}"),
                "traces, one tenant's errors": get(mine, "/traces?status=error&window=30d"),
                "one trace": get(admin, f"/traces/{trace}"),
                "live tail": get(admin, "/tail"),
                "GET /analytics/recent-logs": get(admin, "/analytics/recent-logs?limit=50"),
                "budgets and quality": get(admin, "/budgets"),
                "bare SQL: count of the last 24 h": baseline,
            }
            samples = measure(cases, args.requests)
    print(f"\n{machine()}")
    base_p95 = _pct(samples["bare SQL: count of the last 24 h"], 0.95)
    print(f"{'page':<36}{'p50 ms':>9}{'p95 ms':>9}{'p95 / SQL':>11}")
    for name, values in samples.items():
        p95 = _pct(values, 0.95)
        flag = "" if name.startswith("bare") or p95 < 0.3 else "  OVER 300 ms"
        print(f"{name:<36}{_pct(values, 0.5) * 1000:>9.1f}{p95 * 1000:>9.1f}{p95 / base_p95:>10.1f}x{flag}")


def _deep_cursor(client: object) -> str:
    """The keyset cursor of the 100th page of the trace list (followed page by page, as a reader would)."""
    import re

    import httpx

    assert isinstance(client, httpx.Client)
    path = "/traces?window=30d"
    cursor = ""
    for _ in range(100):
        html = client.get(path).text
        found = re.search(r'rel="next" href="/traces\?([^"]+)"', html)
        if found is None:
            break
        query = found.group(1).replace("&amp;", "&")
        cursor = dict(p.split("=", 1) for p in query.split("&"))["before"]
        path = f"/traces?{query}"
    return unquote(cursor)


if __name__ == "__main__":
    main()
