"""Memory and queue depth over a long run: RSS growth per 10k graph invokes with our handler, against none.

    python -m benchmarks.soak [--invokes 100000] [--block 1000] [--quick]

The reference graph (``tests.graphs.build_graph()``: retriever, two chat models, a 3-way fan-out to a
tool, a subgraph; about 14 runs per invoke) runs ``--invokes`` times with our handler (SQL on a temp
SQLite file + Prometheus on a fresh registry, default settings) and as many times with no callbacks, in
alternating blocks of ``--block`` invokes. RSS is read (after a full GC) around every block and each
block's change is billed to its case, so growth that LangGraph itself shows is not billed to us. The
first block of each case is warm-up (imports, caches, the handler's bounded map of recent runs for
``score()``) and is left out of the growth. After every 10k invokes of ours the pipeline's queue depths
are read without flushing, to show the dispatcher and sink workers keep up. Target: growth < 5 MB over
100k invokes; reported, not asserted.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks._common import describe_machine, markdown_table, rss_bytes
from tests.graphs import INPUT, METADATA, build_graph
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.runtime.factory import build_sinks
from vital_callbacks.runtime.sink_process import ProcessSink
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.sql import SQLSink

MB = 1024 * 1024


def run_block(graph: Any, config: dict[str, Any], n: int) -> tuple[float, int]:
    """(seconds, RSS change in bytes) of ``n`` invokes, RSS read after a full GC on both sides."""
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    for _ in range(n):
        graph.invoke(INPUT, config=config)
    elapsed = time.perf_counter() - start
    gc.collect()
    return elapsed, rss_bytes() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--invokes", type=int, default=100_000, help="invokes with our handler (as many without)")
    parser.add_argument("--block", type=int, default=1000, help="invokes per block; blocks alternate the cases")
    parser.add_argument("--sink-processes", action="store_true",
                        help="the SQL sink in a process of its own (VITAL_SINK_PROCESSES=sql); its RSS is shown too")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.invokes, args.block = 60, 20
    blocks = max(2, args.invokes // args.block)
    checkpoint = max(args.block, (10_000 // args.block) * args.block)
    machine = describe_machine()
    print(f"soak: {blocks} x {args.block} invokes per case, alternating\nmachine: {machine}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "soak.db"
        url = f"sqlite:///{db_path}"
        sql = (build_sinks(Settings(sinks=["sql"], sink_processes=["sql"], database_url=url))[0]
               if args.sink_processes else SQLSink(url))
        handler = VitalCallbackHandler(Settings(), sinks=[sql, PrometheusSink(registry=CollectorRegistry())])
        graph = build_graph()
        configs: dict[str, dict[str, Any]] = {"none": {"metadata": METADATA},
                                              "ours": {"metadata": METADATA, "callbacks": [handler]}}
        growth = {"none": 0, "ours": 0}
        seconds: dict[str, list[float]] = {"none": [], "ours": []}
        start_rss = rss_bytes()
        rows: list[list[object]] = []
        max_depth = 0
        done = 0
        marks: list[tuple[int, int, int]] = []  # (ours invokes, cumulative growth ours, none) at checkpoints
        for b in range(blocks):
            for name in ("ours", "none") if b % 2 else ("none", "ours"):  # alternate which goes first
                elapsed, delta = run_block(graph, configs[name], args.block)
                if b > 0:  # block 0 is warm-up
                    growth[name] += delta
                    seconds[name].append(elapsed / args.block)
            done += args.block
            depth = handler.stats()["queue_depth"]
            max_depth = max(max_depth, sum(depth.values()))
            if done % checkpoint == 0 or b == blocks - 1:
                stats = handler.stats()
                marks.append((done, growth["ours"], growth["none"]))
                child = sql.child.pid if isinstance(sql, ProcessSink) else None
                rows.append([f"{done:,}", f"{rss_bytes() / MB:.1f}", f"{growth['ours'] / MB:+.2f}",
                             f"{growth['none'] / MB:+.2f}", str(sum(depth.values())),
                             str(sum(stats["dropped"].values())), str(stats["open_runs"]),
                             f"{rss_bytes(child) / MB:.1f}" if child else "-"])
                print(f"  {done:,} invokes: RSS {rss_bytes() / MB:.1f} MB, queue depth {depth}", flush=True)
        assert handler.flush(120)
        stats = handler.stats()
        handler.shutdown(60)
        with sqlite3.connect(db_path) as conn:
            llm_rows = int(conn.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0])

    # Growth is a fill-up (bounded maps, SQLite's page cache, allocator arenas) then a slope: the slope
    # is taken after the first checkpoint, and the projection to 100k adds it to what the fill-up took.
    first = marks[0] if len(marks) > 1 else (args.block, 0, 0)
    span = max(1, done - first[0])
    slope = {"ours": (growth["ours"] - first[1]) / MB / span * 10_000,
             "none": (growth["none"] - first[2]) / MB / span * 10_000}
    projected = {name: (growth[name] + slope[name] * max(0, 100_000 - done) / 10_000 * MB) / MB
                 for name in growth}
    ours_ms = sorted(seconds["ours"])[len(seconds["ours"]) // 2] * 1e3
    none_ms = sorted(seconds["none"])[len(seconds["none"]) // 2] * 1e3
    print(f"\n### Soak (`python -m benchmarks.soak --invokes {args.invokes}`)\n\nMachine: {machine}\n")
    print(f"{blocks} alternating blocks of {args.block:,} invokes per case; RSS at start {start_rss / MB:.1f} MB, "
          f"growth after the warm-up block, after a full GC.\n")
    print(markdown_table(["ours invokes", "RSS MB", "growth ours MB (cumulative)", "growth no-callbacks MB",
                          "queue depth (no flush)", "dropped", "open runs", "sink process RSS MB"], rows))
    print()
    print(markdown_table(["figure", "ours (sql + prometheus)", "no callbacks", "ours vs baseline"], [
        [f"RSS growth up to {first[0]:,} invokes (fill-up)", f"{first[1] / MB:+.2f} MB", f"{first[2] / MB:+.2f} MB",
         f"{(first[1] - first[2]) / MB:+.2f} MB"],
        [f"RSS growth per 10k invokes after {first[0]:,}", f"{slope['ours']:+.3f} MB", f"{slope['none']:+.3f} MB",
         f"{slope['ours'] - slope['none']:+.3f} MB"],
        [f"growth over 100k invokes (target < 5 MB){'' if done >= 100_000 else ', projected'}",
         f"{projected['ours']:+.2f} MB", f"{projected['none']:+.2f} MB",
         "met" if projected["ours"] < 5 else "missed"],
        ["ms per invoke (median block)", f"{ours_ms:.3f}", f"{none_ms:.3f}", f"{ours_ms / none_ms:.2f}x"],
        ["largest queue depth seen (no flush)", str(max_depth), "-", "-"],
    ]))
    print(f"\ndelivered: {stats['exported']}, dropped: {stats['dropped']}, "
          f"llm_calls rows {llm_rows:,} (expected {2 * blocks * args.block:,})")


if __name__ == "__main__":
    main()
