"""What a callback handler adds to each invoke: ours with each sink, against the handlers users would pick instead.

    python -m benchmarks.overhead [--rounds 10] [--scale 1.0] [--workloads linear,fanout,chat] [--quick]

Three workloads, each sync (``invoke``) and async (``ainvoke``), all real LangChain / LangGraph with the
fake chat model only:

* ``linear``: a LangGraph graph retrieve (retriever) -> answer (chat model) -> act (tool);
* ``fanout``: ``tests.graphs.build_graph()``: retriever, a chat model, a 3-way ``Send`` fan-out to a tool,
  and a subgraph with a second chat model (about 15 callback runs per invoke);
* ``chat``: a bare loop of ``ScriptedChatModel.invoke``.

Cases: no callbacks (the baseline); an empty ``BaseCallbackHandler``; langchain-core's
``UsageMetadataCallbackHandler``; ``langfuse.langchain.CallbackHandler``; ours with each sink alone (SQL on
a temp SQLite file, Prometheus on a fresh registry, Langfuse, OpenTelemetry with in-memory exporters, logs
into a ``NullHandler``), with SQL + Prometheus, and with SQL + Prometheus + Langfuse. Under ``ainvoke``
one more: ours (SQL + Prometheus) forced to ``run_inline=False``, which is what any sync handler costs
when LangChain hops to its thread executor for each callback. Both Langfuse clients export with the real
SDK to ``tests.langfuse_receiver`` running in a child process, as a real server would be.

Blocks of invokes are interleaved (A B C ... then rotated) with the GC on; after each block, untimed,
the case's background export is flushed so it cannot land in another case's block. Figures are medians
over rounds of the per-round difference to the baseline block of the same round. So this is the latency
the caller sees; the whole cost, where the pipeline's threads share the GIL (and the GC) with the
caller, is ``python -m benchmarks.cost_per_invoke`` (the same cases, each block ending with a timed
flush, with p99, gen-2 collections and CPU by thread), and over a long run ``python -m benchmarks.soak``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from benchmarks._common import (
    describe_machine,
    langfuse_receiver,
    markdown_table,
    paired_delta,
    run_interleaved,
    spread,
)
from tests.graphs import INPUT, METADATA, build_graph
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.testing.fakes import ScriptedChatModel, StaticRetriever

NONE = "no callbacks"
EMPTY = "empty BaseCallbackHandler"
USAGE = "UsageMetadataCallbackHandler"
LANGFUSE = "langfuse CallbackHandler"
OURS = "vital: sql + prometheus"
OURS_PROCESS = "vital: sql + prometheus, VITAL_SINK_PROCESSES=sql"
LANGFUSE_PROCESS = "vital: langfuse, VITAL_SINK_PROCESSES=langfuse"
HOP = "vital: sql + prometheus, run_inline=False"
USAGE_MD = UsageMetadata(input_tokens=1200, output_tokens=350, total_tokens=1550)


class LinearState(TypedDict, total=False):
    question: str
    docs: list[str]
    answer: str
    observation: str


@tool
def calculator(expression: str) -> str:
    """Pretend to evaluate an expression."""
    return f"{expression} = 42"


def build_linear_graph() -> Any:
    """retrieve -> answer (one chat call) -> act (one tool): the shape the issue's reference figures use."""
    llm = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["6 * 7"], usage=USAGE_MD)
    docs = StaticRetriever(documents=["Costs are per million tokens.", "Caching halves input cost."], k=2)

    def retrieve(state: LinearState) -> LinearState:
        return {"docs": [d.page_content for d in docs.invoke(state["question"])]}

    def answer(state: LinearState) -> LinearState:
        return {"answer": str(llm.invoke(f"{state['question']}\n{state['docs']}").content)}

    def act(state: LinearState) -> LinearState:
        return {"observation": calculator.invoke({"expression": state["answer"]})}

    g = StateGraph(LinearState)
    g.add_node("retrieve", retrieve)
    g.add_node("answer", answer)
    g.add_node("act", act)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "answer")
    g.add_edge("answer", "act")
    g.add_edge("act", END)
    return g.compile(name="linear_agent")


@dataclass
class Case:
    callbacks: list[Any]
    flush: Callable[[], object] = lambda: None
    async_only: bool = False
    handlers: list[VitalCallbackHandler] = field(default_factory=list)


class _HoppingHandler(VitalCallbackHandler):
    """Ours, but marked like an ordinary sync handler, so LangChain runs it in its thread executor."""

    run_inline = False


@contextmanager
def build_cases(tmp: Path, receiver_url: str | None) -> Iterator[dict[str, Case]]:
    """Every configuration measured, built once and shut down at the end."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from vital_callbacks.runtime.factory import build_sinks
    from vital_callbacks.sinks.logs import LogSink
    from vital_callbacks.sinks.otel import OTelSink
    from vital_callbacks.sinks.prometheus import PrometheusSink
    from vital_callbacks.sinks.sql import SQLSink

    spans = InMemorySpanExporter()
    files = iter(range(1_000))

    def sink(kind: str) -> Any:
        if kind == "sql":
            return SQLSink(f"sqlite:///{tmp / f'bench-{next(files)}.db'}")
        if kind == "langfuse-process":  # the child reads Langfuse's own variables, as a deployment sets them
            os.environ.update(LANGFUSE_PUBLIC_KEY=f"pk-bench-vital-{next(files)}", LANGFUSE_SECRET_KEY="sk-bench",
                              LANGFUSE_BASE_URL=str(receiver_url))
            (elsewhere,) = build_sinks(Settings(sinks=["langfuse"], sink_processes=["langfuse"]))
            return elsewhere
        if kind == "sql-process":  # built as the settings build it, in a process of its own
            (elsewhere,) = build_sinks(Settings(sinks=["sql"], sink_processes=["sql"],
                                                database_url=f"sqlite:///{tmp / f'bench-{next(files)}.db'}"))
            return elsewhere
        if kind == "prometheus":
            return PrometheusSink(registry=CollectorRegistry())
        if kind == "otel":
            tracer = TracerProvider()
            tracer.add_span_processor(SimpleSpanProcessor(spans))
            return OTelSink(tracer, MeterProvider(metric_readers=[InMemoryMetricReader()]))
        if kind == "logs":
            events_logger = logging.getLogger("benchmarks.vital_events")
            events_logger.addHandler(logging.NullHandler())
            events_logger.propagate = False
            return LogSink(events_logger)
        from vital_callbacks.sinks.langfuse import LangfuseSink

        # One public key per sink: sinks sharing a key share one SDK client, whose exports only the
        # first sink can count (the second would see its in-flight count grow until it refuses batches).
        return LangfuseSink(public_key=f"pk-bench-vital-{next(files)}", secret_key="sk-bench", base_url=receiver_url)

    def ours(*kinds: str, cls: type[VitalCallbackHandler] = VitalCallbackHandler, async_only: bool = False) -> Case:
        handler = cls(Settings(), sinks=[sink(k) for k in kinds])

        def flush() -> None:
            handler.flush(60)
            spans.clear()

        return Case([handler], flush, async_only, [handler])

    cases: dict[str, Case] = {NONE: Case([]), EMPTY: Case([BaseCallbackHandler()]),
                              USAGE: Case([UsageMetadataCallbackHandler()])}
    client = None
    if receiver_url is not None:
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler

        logging.getLogger("langfuse").setLevel(logging.ERROR)
        client = Langfuse(public_key="pk-bench-lf", secret_key="sk-bench", base_url=receiver_url)
        cases[LANGFUSE] = Case([CallbackHandler(public_key="pk-bench-lf")], client.flush)
    for kind in ("sql", "prometheus", "langfuse", "otel", "logs"):
        if kind != "langfuse" or receiver_url is not None:
            cases[f"vital: {kind}"] = ours(kind)
    cases[OURS] = ours("sql", "prometheus")
    cases[OURS_PROCESS] = ours("sql-process", "prometheus")
    if receiver_url is not None:
        cases[LANGFUSE_PROCESS] = ours("langfuse-process")
    if receiver_url is not None:
        cases["vital: sql + prometheus + langfuse"] = ours("sql", "prometheus", "langfuse")
    cases[HOP] = ours("sql", "prometheus", cls=_HoppingHandler, async_only=True)
    try:
        yield cases
    finally:
        for case in cases.values():
            for handler in case.handlers:
                stats = handler.stats()
                if any(stats["dropped"].values()) or stats["handler_errors"]:
                    print(f"warning: {stats['dropped']} dropped, {stats['handler_errors']} handler errors")
                handler.shutdown(60)
        if client is not None:
            client.shutdown()


def sync_runner(call: Callable[[dict[str, Any]], object], callbacks: list[Any]) -> Callable[[int], float]:
    config: dict[str, Any] = {"metadata": METADATA, "callbacks": callbacks}

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call(config)
        return time.perf_counter() - start

    return run


def async_runner(loop: asyncio.AbstractEventLoop, call: Callable[[dict[str, Any]], Any],
                 callbacks: list[Any]) -> Callable[[int], float]:
    config: dict[str, Any] = {"metadata": METADATA, "callbacks": callbacks}

    async def block(n: int) -> float:
        start = time.perf_counter()  # timed inside the loop, so loop start-up is not billed
        for _ in range(n):
            await call(config)
        return time.perf_counter() - start

    return lambda n: loop.run_until_complete(block(n))


def workloads() -> dict[str, tuple[Any, Callable[[dict[str, Any]], object], Callable[[dict[str, Any]], Any], int]]:
    """name -> (runnable, sync call, async call, invokes per block at scale 1)."""
    linear, fanout = build_linear_graph(), build_graph()
    chat = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"], usage=USAGE_MD)
    return {
        "linear": (linear, lambda c: linear.invoke(INPUT, config=c), lambda c: linear.ainvoke(INPUT, config=c), 30),
        "fanout": (fanout, lambda c: fanout.invoke(INPUT, config=c), lambda c: fanout.ainvoke(INPUT, config=c), 12),
        "chat": (chat, lambda c: chat.invoke("hi", config=c), lambda c: chat.ainvoke("hi", config=c), 150),
    }


def measure(cases: dict[str, Case], names: list[str], rounds: int, scale: float) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    loop = asyncio.new_event_loop()
    try:
        for name, (_, sync_call, async_call, per_round) in workloads().items():
            if name not in names:
                continue
            n = max(1, int(per_round * scale))
            for mode in ("invoke", "ainvoke"):
                chosen = {k: c for k, c in cases.items() if mode == "ainvoke" or not c.async_only}
                runners = {k: sync_runner(sync_call, c.callbacks) if mode == "invoke"
                           else async_runner(loop, async_call, c.callbacks) for k, c in chosen.items()}

                def flush(case: str, chosen: dict[str, Case] = chosen) -> None:
                    chosen[case].flush()

                started = time.perf_counter()
                results[f"{name} {mode}"] = run_interleaved(runners, rounds=rounds, per_round=n, between=flush)
                print(f"  measured {name} {mode}: {len(chosen)} cases x {rounds} rounds x {n} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        loop.close()
    return results


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def report(results: dict[str, dict[str, list[float]]]) -> None:
    for workload, samples in results.items():
        base_ms = statistics.median(samples[NONE])
        rows = []
        for case in samples:
            added = paired_delta(samples, case, NONE)
            rows.append([case, _ms(base_ms + added), f"{_ms(added)} ± {_ms(spread(samples, case, NONE))}",
                         f"{(base_ms + added) / base_ms:.2f}x"])
        print(f"\n#### {workload}: median ms per call, added = paired difference to '{NONE}'\n")
        print(markdown_table(["case", "ms / call", "added ms (± IQR/2)", "time vs no callbacks"], rows))
    targets(results)


def targets(results: dict[str, dict[str, list[float]]]) -> None:
    """The issue's targets, phrased as ratios of added time, per graph workload."""
    rows = []
    for workload, samples in results.items():
        if workload.startswith("chat"):
            continue
        ours = paired_delta(samples, OURS, NONE)
        row = [workload, f"{_ms(ours)} ({'met' if ours <= 0.15e-3 else 'missed'})"]
        usage = paired_delta(samples, USAGE, NONE)
        row.append(f"{ours / usage:.2f}x" if usage > 0 else "n/a (usage handler ~0)")
        if LANGFUSE in samples:
            lf = paired_delta(samples, LANGFUSE, NONE)
            row.append(f"{ours / lf:.2f}x" if lf > 0 else "n/a")
        else:
            row.append("not measured")
        row.append(f"{_ms(paired_delta(samples, HOP, OURS))}" if HOP in samples else "-")
        rows.append(row)
    print("\n#### targets (ours = SQL + Prometheus)\n")
    print(markdown_table(["workload", "ours added ms (target <= 0.15)", "ours / UsageMetadata overhead (<= 2x)",
                          "ours / Langfuse handler overhead (<= 0.15x)", "executor hop ms (hop - ours)"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the invokes per block")
    parser.add_argument("--workloads", default="linear,fanout,chat")
    parser.add_argument("--no-langfuse", action="store_true", help="skip both Langfuse clients")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.scale = 1, 0.01  # one round of one invoke per block and case
    machine = describe_machine()
    print(f"overhead per invoke: {args.rounds} interleaved rounds, scale {args.scale}\nmachine: {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        url = None if args.no_langfuse else stack.enter_context(langfuse_receiver())
        cases = stack.enter_context(build_cases(Path(tmp), url))
        results = measure(cases, args.workloads.split(","), args.rounds, args.scale)
    print(f"\n### Overhead per invoke (`python -m benchmarks.overhead`)\n\nMachine: {machine}")
    report(results)


if __name__ == "__main__":
    main()
