"""What each stage of our handler costs per graph invoke, measured alone on one thread.

    python -m benchmarks.stages [--rounds 5] [--invokes 1000] [--quick]

``benchmarks.cost_per_invoke`` measures the whole: the hooks and the background threads sharing the GIL
with the caller, where one stage's work slows the others. This one takes the stages apart, so a change
to one of them can be measured without that noise: the ``linear`` workload of ``benchmarks.overhead``
(retriever -> chat model -> tool under LangGraph) runs with our handler's hook records kept aside
instead of queued (the hooks themselves are timed with their records dropped); then, timed one after
the other on this thread, those records go through the dispatcher's assembler (the run tree), the
processors (usage, price, roll-up, redaction), the journal's encoding, and each sink's ``export``
(SQLite on a temp file that grows over the rounds, Prometheus on a fresh registry), 1,024 records
(about 512 events, a sink's batch) at a time. Left out: the inbox's ``submit``, the journal's file
write, the hand-offs between threads. Per stage: the median over rounds of its time per invoke, and
its share of a bare invoke timed in the same round. The hooks' row is what they add over an empty
``BaseCallbackHandler`` (LangChain's dispatch, which every handler pays, is that handler's row).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from prometheus_client import CollectorRegistry

from benchmarks._common import describe_machine, markdown_table
from benchmarks.overhead import build_linear_graph
from tests.graphs import INPUT, METADATA
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.core.codec import encode
from vital_callbacks.core.events import Event
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.sql import SQLSink

STAGES = ("no callbacks (bare invoke)", "empty BaseCallbackHandler: LangChain's dispatch",
          "our hooks, over the empty handler", "assembling the run tree",
          "processors (read usage, price, roll up, redact)", "journal encoding (SQL sink)", "SQLite export",
          "Prometheus export")


def measure(tmp: Path, rounds: int, invokes: int, batch: int = 1024) -> dict[str, list[float]]:
    """Seconds per invoke of each stage, one value per round."""
    graph = build_linear_graph()
    sql = SQLSink(f"sqlite:///{tmp / 'stages.db'}")
    prometheus = PrometheusSink(registry=CollectorRegistry())
    handler = VitalCallbackHandler(Settings(), sinks=[sql, prometheus])
    pipeline = handler.runtime.pipeline
    records: list[tuple[Any, ...]] = []

    def keep(record: tuple[Any, ...]) -> bool:
        records.append(record)
        return True

    def run(callbacks: list[Any]) -> float:
        config = {"metadata": METADATA, "callbacks": callbacks}
        started = time.perf_counter()
        for _ in range(invokes):
            graph.invoke(INPUT, config=config)
        return time.perf_counter() - started

    def dropped(record: tuple[Any, ...]) -> bool:
        return True

    run([handler])  # warm-up through the real pipeline: imports, the store's tables, first plans
    handler.flush(60)
    empty = BaseCallbackHandler()
    out: dict[str, list[float]] = {stage: [] for stage in STAGES}
    def background() -> list[float]:
        """The background stages over this round's records, a chunk at a time as the dispatcher takes
        them (each chunk's drafts and events freed before the next), each stage's time summed."""
        spent = [0.0] * 5
        while records:
            chunk = records[:batch]
            del records[:batch]
            started = time.perf_counter()
            drafts = [d for d in map(pipeline._assemble, chunk) if d is not None]
            assembled = time.perf_counter()
            events: list[Event] = [e for e in map(pipeline._process, drafts) if e is not None]
            processed = time.perf_counter()
            encode(events)
            journaled = time.perf_counter()
            sql.export(events)
            stored = time.perf_counter()
            prometheus.export(events)
            counted = time.perf_counter()
            for i, seconds in enumerate((assembled - started, processed - assembled, journaled - processed,
                                         stored - journaled, counted - stored)):
                spent[i] += seconds
            del chunk, drafts, events
        return spent

    for _ in range(rounds):
        # The hooks are timed with their records dropped: kept, 14,000 records would hold the
        # invokes' objects alive and make the garbage collector's passes, not the hooks, the cost.
        handler._submit = dropped
        gc.collect()
        bare, floor, hooked = run([]), run([empty]), run([handler])
        handler._submit = keep  # then the same invokes again, untimed, their records kept aside
        run([handler])
        for stage, seconds in zip(STAGES, (bare, floor - bare, hooked - floor, *background()), strict=True):
            out[stage].append(seconds / invokes)
    handler._submit = pipeline.submit
    handler.shutdown()
    return out


def report(results: dict[str, list[float]], invokes: int) -> None:
    bare = statistics.median(results[STAGES[0]])
    rows = []
    for stage, per_invoke in results.items():
        median = statistics.median(per_invoke)
        rows.append([stage, f"{median * 1e6:.1f}", f"{min(per_invoke) * 1e6:.1f} .. {max(per_invoke) * 1e6:.1f}",
                     f"{median / bare:.3f}x"])
    background = sum(statistics.median(results[s]) for s in STAGES[3:])
    print(f"\n#### linear graph, {invokes} invokes per round; bare invoke median {bare * 1e3:.3f} ms\n")
    print(markdown_table(["stage", "µs per invoke (median)", "range over rounds", "x bare invoke"], rows))
    print(f"\nBackground stages together: {background * 1e6:.1f} µs per invoke ({background / bare:.3f}x a bare "
          "invoke), before they share the GIL with the caller.")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--invokes", type=int, default=1000, help="invokes per round")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.invokes = 1, 5
    machine = describe_machine()
    print(f"stages: {args.rounds} rounds of {args.invokes} invokes\nmachine: {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(Path(tmp), args.rounds, args.invokes)
    print(f"\n### Cost of each stage per invoke (`python -m benchmarks.stages`)\n\nMachine: {machine}")
    report(results, args.invokes)


if __name__ == "__main__":
    main()
