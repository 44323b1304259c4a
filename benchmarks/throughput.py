"""Events/s from the handler through the pipeline into each sink, and rows/s landed in SQLite and PostgreSQL.

    python -m benchmarks.throughput [--traces 4000] [--rounds 3] [--sinks memory,sqlite,postgresql,...] [--quick]

The caller drives the handler's hooks directly, as LangGraph would for a graph run with one node, one
chat-model call and one tool call: four events per trace (graph run, node run, LLM call, tool call),
with usage to price. For each sink a fresh handler with a private pipeline (enricher on the dispatcher,
the sink on its worker) takes ``--traces`` traces as fast as the caller can produce them; the clock
stops when ``flush()`` returns, i.e. when every event has been exported. Sinks are interleaved round
by round (the order rotates); the baseline is the in-memory sink, so each ratio is what that sink's
export costs relative to the pipeline's own ceiling. For SQL sinks the rows in the four tables are
counted afterwards, so "rows/s" is rows that really landed.

PostgreSQL: ``VITAL_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``); a
scratch database is created and dropped; skipped with a message when the server is unreachable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.utils.uuid import uuid7

from benchmarks._common import describe_machine, langfuse_receiver, markdown_table
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.store import migrate as db

EVENTS_PER_TRACE = 4
TABLES = ("graph_runs", "node_runs", "llm_calls", "tool_calls")
PG_URL = os.environ.get("VITAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
GRAPH_MD = {"tenant_id": "acme", "user_id": "u1", "session_id": "s1"}
NODE_MD = {"langgraph_node": "plan", "langgraph_step": 1, "langgraph_checkpoint_ns": "plan:1"}
LLM_MD = {**NODE_MD, "ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
MESSAGES = [[HumanMessage("what does it cost?")]]
# As langchain-openai returns a non-streamed chat completion: the provider's raw usage in
# response_metadata / llm_output beside LangChain's usage_metadata (the raw one is what gets priced).
TOKEN_USAGE = {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
RESULT = LLMResult(generations=[[ChatGeneration(message=AIMessage(
    "it depends", usage_metadata={"input_tokens": 1200, "output_tokens": 350, "total_tokens": 1550},
    response_metadata={"token_usage": TOKEN_USAGE, "model_name": "gpt-4o-mini-2024-07-18",
                       "finish_reason": "stop", "service_tier": "default"}))]],
    llm_output={"token_usage": TOKEN_USAGE, "model_name": "gpt-4o-mini-2024-07-18"})


def drive(handler: VitalCallbackHandler, traces: int) -> None:
    """The hooks LangGraph calls for graph -> node -> (chat model, tool), ``traces`` times, with run ids
    made as LangChain's callback manager makes them (``uuid7``; ``uuid.uuid4``'s ``os.urandom`` would
    release the GIL four times per trace, which LangChain does not)."""
    for _ in range(traces):
        root, node, llm, tool = uuid7(), uuid7(), uuid7(), uuid7()
        handler.on_chain_start({"name": "agent"}, {}, run_id=root, metadata=GRAPH_MD)
        handler.on_chain_start({"name": "plan"}, {}, run_id=node, parent_run_id=root, metadata=NODE_MD)
        handler.on_chat_model_start({"name": "ChatOpenAI"}, MESSAGES, run_id=llm, parent_run_id=node,
                                    metadata=LLM_MD)
        handler.on_llm_end(RESULT, run_id=llm)
        handler.on_tool_start({"name": "lookup"}, "topic", run_id=tool, parent_run_id=node, metadata=NODE_MD)
        handler.on_tool_end("facts", run_id=tool)
        handler.on_chain_end({}, run_id=node)
        handler.on_chain_end({}, run_id=root)


class Target:
    """One sink to measure: how to build a fresh one, and how to count its rows (SQL only)."""

    def __init__(self, build: Callable[[], Any], count: Callable[[], int] | None = None,
                 after: Callable[[], object] = lambda: None) -> None:
        self.build = build
        self.count = count
        self.after = after


def _pg_count(url: str) -> int:
    from tests import pg_cluster

    return sum(int(pg_cluster.query(url, f"SELECT COUNT(*) AS n FROM {t}")[0]["n"]) for t in TABLES)


def _sqlite_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return sum(int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES)


@contextmanager
def targets(names: list[str], tmp: Path) -> Iterator[dict[str, Target]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from vital_callbacks.runtime.registry import sink_class
    from vital_callbacks.sinks.logs import LogSink
    from vital_callbacks.sinks.memory import InMemorySink
    from vital_callbacks.sinks.otel import OTelSink
    from vital_callbacks.sinks.prometheus import PrometheusSink
    from vital_callbacks.sinks.sql import SQLSink

    found: dict[str, Target] = {}
    with ExitStack() as stack:
        for name in names:
            if name == "memory":
                found[name] = Target(InMemorySink)
            elif name == "sqlite":
                path = tmp / "throughput.db"
                db.upgrade(f"sqlite:///{path}")
                found[name] = Target(partial(SQLSink, f"sqlite:///{path}", auto_migrate=False),
                                     partial(_sqlite_count, path))
            elif name == "postgresql":
                from tests import pg_cluster

                if not pg_cluster.reachable(PG_URL):
                    print(f"PostgreSQL skipped: no server at {db.mask_url(PG_URL)}")
                    continue
                url = stack.enter_context(pg_cluster.fresh_database(PG_URL))
                db.upgrade(url)
                settings = Settings(database_url=url, spill_dir=tmp / "spill", database_auto_migrate=False)
                found[name] = Target(partial(sink_class("sql").from_settings, settings), partial(_pg_count, url))
            elif name == "prometheus":
                found[name] = Target(lambda: PrometheusSink(registry=CollectorRegistry()))
            elif name == "otel":
                spans = InMemorySpanExporter()

                def otel(exporter: InMemorySpanExporter = spans) -> OTelSink:
                    tracer = TracerProvider()
                    tracer.add_span_processor(SimpleSpanProcessor(exporter))
                    return OTelSink(tracer, MeterProvider(metric_readers=[InMemoryMetricReader()]))

                found[name] = Target(otel, after=spans.clear)
            elif name == "logs":
                events_logger = logging.getLogger("benchmarks.vital_events")
                events_logger.addHandler(logging.NullHandler())
                events_logger.propagate = False
                found[name] = Target(partial(LogSink, events_logger))
            elif name == "langfuse":
                from vital_callbacks.sinks.langfuse import LangfuseSink

                logging.getLogger("langfuse").setLevel(logging.ERROR)
                rx = stack.enter_context(langfuse_receiver())
                found[name] = Target(partial(LangfuseSink, public_key="pk-bench", secret_key="sk-bench", base_url=rx))
            else:
                raise SystemExit(f"unknown sink {name!r}")
        yield found


def one_run(target: Target, traces: int) -> tuple[float, float, int | None, dict[str, Any]]:
    """(events/s delivered, caller µs per event, rows landed, handler stats) for one fresh pipeline."""
    before = target.count() if target.count else None
    handler = VitalCallbackHandler(Settings(queue_size=EVENTS_PER_TRACE * traces + 10), sinks=[target.build()])
    start = time.perf_counter()
    drive(handler, traces)
    caller = time.perf_counter() - start
    handler.flush(600)
    elapsed = time.perf_counter() - start
    stats = handler.stats()
    handler.shutdown(60)
    target.after()
    rows = target.count() - before if target.count and before is not None else None
    events = EVENTS_PER_TRACE * traces
    return events / elapsed, caller / events * 1e6, (rows if rows is not None else None), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=int, default=4000, help="traces (4 events each) per sink per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sinks", default="memory,sqlite,postgresql,prometheus,otel,logs,langfuse")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.traces, args.rounds = 50, 1
    names = args.sinks.split(",")
    if "memory" not in names:
        names.insert(0, "memory")  # the baseline
    machine = describe_machine()
    print(f"throughput: {args.traces} traces x {EVENTS_PER_TRACE} events, {args.rounds} rounds\nmachine: {machine}",
          flush=True)
    rates: dict[str, list[float]] = {}
    callers: dict[str, list[float]] = {}
    rows: dict[str, list[float]] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, targets(names, Path(tmp)) as found:
        order = list(found)
        for r in range(args.rounds + 1):  # round 0 warms up imports, connections and caches
            for name in order[r % len(order):] + order[: r % len(order)]:
                rate, caller, landed, stats = one_run(found[name], args.traces if r else max(10, args.traces // 10))
                if any(stats["dropped"].values()) or stats["handler_errors"]:
                    problems.append(f"{name}: dropped {stats['dropped']}, handler errors {stats['handler_errors']}")
                if r == 0:
                    continue
                rates.setdefault(name, []).append(rate)
                callers.setdefault(name, []).append(caller)
                if landed is not None:
                    rows.setdefault(name, []).append(landed / (EVENTS_PER_TRACE * args.traces / rate))
            print(f"  round {r} done", flush=True)
    base = rates["memory"]
    table = []
    for name, values in rates.items():
        paired = statistics.median(v / b for v, b in zip(values, base, strict=True))
        rows_s = f"{statistics.median(rows[name]):,.0f}" if name in rows else "-"
        table.append([name, f"{statistics.median(values):,.0f}", f"{paired:.2f}x", rows_s,
                      f"{statistics.median(callers[name]):.1f}"])
    print(f"\n### Throughput (`python -m benchmarks.throughput`)\n\nMachine: {machine}\n")
    print(f"{args.traces:,} traces x {EVENTS_PER_TRACE} events per sink per round, {args.rounds} interleaved "
          "rounds, medians; delivered = exported when `flush()` returns.\n")
    print(markdown_table(["sink", "events/s delivered", "vs in-memory sink", "rows/s landed",
                          "caller us / event"], table))
    for problem in problems:
        print(f"warning: {problem}")


if __name__ == "__main__":
    main()
