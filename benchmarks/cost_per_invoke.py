"""What a handler costs the process per graph invoke, background work included: time, CPU by thread, GC.

    python -m benchmarks.cost_per_invoke [--rounds 8] [--invokes 300] [--quick]

One process, the ``linear`` workload of ``benchmarks.overhead`` (retrieve -> answer -> act: a retriever,
a chat model and a tool under LangGraph). Blocks of invokes, one per configuration per round, in a
shuffled order each round; every block ends with a *timed* flush, so what the handler's threads still
owe is billed to the block that caused it (``benchmarks.overhead`` flushes untimed, which shows the
latency a caller sees, not the work). Per configuration: the median time added per invoke (block plus
its flush, against the no-callback block of the same round) and its spread, the p99 of one invoke, the
flush after the block, gen-2 collections per 1,000 invokes, and CPU seconds per 1,000 invokes on each
thread (``time.pthread_getcpuclockid``: the caller, the dispatcher, each sink's worker).

Configurations: no callbacks (the baseline), an empty ``BaseCallbackHandler``, langchain-core's
``UsageMetadataCallbackHandler``, ``langfuse.langchain.CallbackHandler`` exporting to a local receiver
(unless ``--no-langfuse``), ours with SQL + Prometheus (the SQL sink on its thread, and in a process of
its own: ``VITAL_SINK_PROCESSES=sql``, that process's CPU read from ``/proc``), and ours with each of those
sinks alone; and our Langfuse sink (against the same receiver) on its thread and in its own process.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import describe_machine, langfuse_receiver, markdown_table
from benchmarks.overhead import (
    EMPTY,
    LANGFUSE,
    LANGFUSE_PROCESS,
    NONE,
    OURS,
    OURS_PROCESS,
    USAGE,
    Case,
    build_cases,
    build_linear_graph,
)
from tests.graphs import INPUT, METADATA
from vital_callbacks.runtime.sink_process import ProcessSink

CONFIGS = (NONE, EMPTY, USAGE, LANGFUSE, OURS, OURS_PROCESS, "vital: sql", "vital: prometheus", "vital: langfuse",
           LANGFUSE_PROCESS)


@dataclass
class Samples:
    added_per_invoke: list[float] = field(default_factory=list)
    invoke_times: list[float] = field(default_factory=list)
    flush_s: list[float] = field(default_factory=list)
    gen2: int = 0
    invokes: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)


class _Gen2:
    """Counts full (generation 2) collections, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.count = 0
        gc.callbacks.append(self._seen)

    def _seen(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info.get("generation") == 2:
            self.count += 1


def _own_threads(case: Case) -> dict[int, str]:
    """The threads of a case's own runtime (its dispatcher, each sink's worker), by ident."""
    out: dict[int, str] = {}
    for handler in case.handlers:
        pipeline = handler.runtime.pipeline
        threads = [(pipeline._thread, "dispatcher")]
        threads += [(w._thread, f"sink {w.name}") for w in pipeline._workers]
        out.update({t.ident: name for t, name in threads if t.ident is not None})
    return out


def _writer_pids(case: Case) -> list[int]:
    """The processes a case's sinks run in (``VITAL_SINK_PROCESSES``)."""
    return [sink.child.pid for handler in case.handlers for sink in handler.runtime.pipeline.sinks
            if isinstance(sink, ProcessSink) and sink.child.pid is not None]


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a child process has used so far, from ``/proc`` (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu(own: dict[int, str], writers: Sequence[int] = ()) -> dict[str, float]:
    """CPU seconds each live thread has used so far: the caller, the case's own threads by role, and
    every other thread (the idle runtimes of the other cases, Langfuse's exporter...) as one; and the
    processes the case's sinks run in, if any."""
    out: dict[str, float] = {}
    for pid in writers:
        out["sink's process"] = out.get("sink's process", 0.0) + _process_cpu(pid)
    for thread in threading.enumerate():
        try:
            used = time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))
        except (OSError, AttributeError):  # a thread that just ended
            continue
        name = "caller" if thread is threading.main_thread() else own.get(thread.ident or 0, "other threads")
        out[name] = out.get(name, 0.0) + used
    return out


def _block(invoke: Callable[[dict[str, Any]], object], case: Case, n: int) -> tuple[float, list[float], float]:
    config: dict[str, Any] = {"metadata": METADATA, "callbacks": case.callbacks}
    times = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        invoke(config)
        times.append(time.perf_counter() - t0)
    ended = time.perf_counter()
    case.flush()
    flushed = time.perf_counter()
    return flushed - start, times, flushed - ended


def measure(cases: dict[str, Case], rounds: int, n: int, seed: int = 21) -> dict[str, Samples]:
    graph = build_linear_graph()

    def invoke(config: dict[str, Any]) -> object:
        return graph.invoke(INPUT, config=config)

    names = [c for c in CONFIGS if c in cases]
    for name in names:  # warm-up: imports, first plans, connections
        _block(invoke, cases[name], max(5, n // 10))
    gen2 = _Gen2()
    results = {name: Samples() for name in names}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        totals: dict[str, float] = {}
        for name in order:
            own, writers = _own_threads(cases[name]), _writer_pids(cases[name])
            cpu_before, gen2_before = _thread_cpu(own, writers), gen2.count
            total, times, flush = _block(invoke, cases[name], n)
            cpu_after = _thread_cpu(own, writers)
            sample = results[name]
            totals[name] = total
            sample.invoke_times += times
            sample.flush_s.append(flush)
            sample.gen2 += gen2.count - gen2_before
            sample.invokes += n
            for thread, used in cpu_after.items():
                sample.cpu_s[thread] = sample.cpu_s.get(thread, 0.0) + used - cpu_before.get(thread, 0.0)
        for name in names:
            results[name].added_per_invoke.append((totals[name] - totals[NONE]) / n)
    return results


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def report(results: dict[str, Samples], n: int) -> None:
    base = results[NONE]
    bare = statistics.median(base.invoke_times)
    lf = statistics.median(results[LANGFUSE].added_per_invoke) if LANGFUSE in results else None
    rows = []
    for name, s in results.items():
        added = statistics.median(s.added_per_invoke)
        q1, _, q3 = statistics.quantiles(s.added_per_invoke, n=4) if len(s.added_per_invoke) > 1 else (0, 0, 0)
        p99 = statistics.quantiles(s.invoke_times, n=100)[98] if len(s.invoke_times) > 1 else s.invoke_times[0]
        per_k = 1000 / s.invokes
        threads = ", ".join(f"{t} {c * per_k:.3f}" for t, c in sorted(s.cpu_s.items(), key=lambda kv: -kv[1])
                            if c * per_k >= 0.001)
        rows.append([name, f"{_ms(added)} ± {_ms((q3 - q1) / 2)}", f"{added / bare:.2f}x",
                     "-" if lf is None or lf <= 0 else f"{added / lf:.2f}x", _ms(p99),
                     _ms(statistics.median(s.flush_s)), f"{s.gen2 * per_k:.2f}", threads])
    print(f"\n#### linear graph, {n} invokes per block; bare invoke median {_ms(bare)} ms\n")
    print(markdown_table(["config", "added ms / invoke (± IQR/2)", "x bare invoke", "x Langfuse's added",
                          "p99 invoke ms", f"flush after {n} ms", "gen-2 GCs / 1k", "CPU s / 1k invokes by thread"],
                         rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--invokes", type=int, default=300, help="invokes per block")
    parser.add_argument("--no-langfuse", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.invokes, args.no_langfuse = 2, 3, True
    machine = describe_machine()
    print(f"cost per invoke: {args.rounds} shuffled rounds of {args.invokes}\nmachine: {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        url = None if args.no_langfuse else stack.enter_context(langfuse_receiver())
        cases = stack.enter_context(build_cases(Path(tmp), url))
        results = measure({k: v for k, v in cases.items() if k in CONFIGS}, args.rounds, args.invokes)
    print(f"\n### Cost per invoke (`python -m benchmarks.cost_per_invoke`)\n\nMachine: {machine}")
    report(results, args.invokes)


if __name__ == "__main__":
    main()
