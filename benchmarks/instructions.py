"""What a handler costs per graph invoke in instructions, by thread: a count that machine noise barely moves.

    python -m benchmarks.instructions [--invokes 200] [--jobs 2] [--no-langfuse] [--quick]

``benchmarks.cost_per_invoke`` measures time, and on a shared two-core machine its figures move more
between runs than the changes it should judge. Valgrind's callgrind counts the instructions each
thread executes instead. The caller's count is all but fixed for a given program and input; the
background threads' counts still depend on timing (how many records each wake-up finds, how often
a loop takes a turn), by a few percent from run to run. Each configuration runs in a process of its
own under ``valgrind --tool=callgrind --separate-threads=yes``, twice: warm-up invokes and a flush,
then a short block or a long one (``--invokes`` more), then a flush. The difference between the two
runs, per extra invoke, is what an invoke costs on each thread, with start-up, imports and warm-up
gone. Same workload as ``benchmarks.cost_per_invoke`` (the ``linear`` graph: retriever -> chat model
-> tool).

What it does not count: time spent waiting (the GIL, I/O, the kernel) and the caller running slower
while other threads run (caches, hand-offs: ``cost_per_invoke`` sees that). A process the measured
one starts (a sink's own, ``VITAL_SINK_PROCESSES``) is followed (``--trace-children``) and counted as
one figure; Langfuse's handler exports to ``tests.langfuse_receiver`` in a process that is not
counted, as a real server would not be.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import describe_machine, langfuse_receiver, markdown_table
from benchmarks.overhead import EMPTY, LANGFUSE, NONE, OURS, OURS_PROCESS, USAGE

PROMETHEUS = "vital: prometheus"
SQL = "vital: sql"
CONFIGS = (NONE, EMPTY, USAGE, LANGFUSE, OURS, OURS_PROCESS, SQL, PROMETHEUS)
WARMUP = 20
SHORT = 10
OTHER_PROCESSES = "other processes"
"""Every thread of the processes the measured one started (a sink's own process), summed."""
ROOT = Path(__file__).resolve().parent.parent


def _callbacks(config: str, tmp: Path, receiver_url: str | None) -> tuple[list[Any], Any]:
    """The callbacks of one configuration, and what flushes them."""
    from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler

    if config == NONE:
        return [], None
    if config == EMPTY:
        return [BaseCallbackHandler()], None
    if config == USAGE:
        return [UsageMetadataCallbackHandler()], None
    if config == LANGFUSE:
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler

        client = Langfuse(public_key="pk-bench-lf", secret_key="sk-bench", base_url=receiver_url)
        return [CallbackHandler(public_key="pk-bench-lf")], client.flush
    from prometheus_client import CollectorRegistry

    from vital_callbacks import Settings, VitalCallbackHandler
    from vital_callbacks.sinks.prometheus import PrometheusSink
    from vital_callbacks.sinks.sql import SQLSink

    sinks: list[Any] = []
    if config == OURS_PROCESS:  # built as the settings build it: the SQL sink in a process of its own
        from vital_callbacks.runtime.factory import build_sinks

        sinks += build_sinks(Settings(sinks=["sql"], sink_processes=["sql"],
                                      database_url=f"sqlite:///{tmp / 'instructions.db'}"))
    if config in (OURS, SQL):
        sinks.append(SQLSink(f"sqlite:///{tmp / 'instructions.db'}"))
    if config in (OURS, OURS_PROCESS, PROMETHEUS):
        sinks.append(PrometheusSink(registry=CollectorRegistry()))
    handler = VitalCallbackHandler(Settings(), sinks=sinks)
    return [handler], lambda: handler.flush(600)


def child(config: str, invokes: int, receiver_url: str | None, names_file: Path) -> None:
    """One run under callgrind: warm-up, flush, ``invokes`` invokes, flush; the threads' names, in the
    order they started (callgrind numbers its per-thread files that way), written to ``names_file``."""
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def recorded(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    threading.Thread.start = recorded  # type: ignore[method-assign, assignment]
    try:
        _invoke(config, invokes, receiver_url, started, names_file)
    finally:
        threading.Thread.start = start  # type: ignore[method-assign]


def _invoke(config: str, invokes: int, receiver_url: str | None, started: list[threading.Thread],
            names_file: Path) -> None:
    from benchmarks.overhead import build_linear_graph
    from tests.graphs import INPUT, METADATA

    # What our handler logged as an error (a sink's process restarted or given up, events lost): the
    # counts would then hold work that a healthy run does not do, or miss some.
    problems: list[str] = []
    seen = logging.Handler(logging.ERROR)
    seen.emit = lambda record: problems.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("vital_callbacks").addHandler(seen)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            callbacks, flush = _callbacks(config, Path(tmp), receiver_url)
            graph = build_linear_graph()
            run_config = {"metadata": METADATA, "callbacks": callbacks}
            for _ in range(WARMUP):
                graph.invoke(INPUT, config=run_config)
            if flush is not None and flush() is False:
                problems.append("the flush after the warm-up failed")
            for _ in range(invokes):
                graph.invoke(INPUT, config=run_config)
            if flush is not None and flush() is False:
                problems.append("the last flush failed")
            # A thread that ended before the last one started left its number free for reuse: then
            # only the totals (the caller, everything else) are certain.
            ended_early = any(not t.is_alive() for t in started[:-1])
            names_file.write_text(json.dumps({"pid": os.getpid(), "names": [t.name for t in started],
                                              "reused": ended_early, "problems": problems}))
            for handler in callbacks:
                if hasattr(handler, "shutdown"):
                    handler.shutdown(60)
    finally:
        logging.getLogger("vital_callbacks").removeHandler(seen)


@dataclass
class Run:
    threads: dict[str, int]
    """Instructions by thread name (``caller`` for the main thread)."""


_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def run_once(config: str, invokes: int, receiver_url: str | None, work: Path) -> Run:
    """``config`` with ``invokes`` timed invokes, under callgrind."""
    out = work / f"{abs(hash(config))}-{invokes}"
    out.mkdir()
    names_file = out / "names.json"
    command = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--trace-children=yes",
               f"--callgrind-out-file={out}/cg.%p",
               sys.executable, "-m", "benchmarks.instructions", "--child", config, "--invokes", str(invokes),
               "--names-file", str(names_file)]
    if receiver_url is not None:
        command += ["--receiver", receiver_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not names_file.exists():
        raise RuntimeError(f"{config}: the run under callgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    problems = json.loads(names_file.read_text()).get("problems")
    if problems:
        raise RuntimeError(f"{config}: the run under callgrind was not a healthy one: {problems}")
    return read_run(out, names_file)


def read_run(out: Path, names_file: Path) -> Run:
    """The instruction totals of callgrind's per-thread files in ``out`` (``cg.PID-NN``, the main thread
    ``01``, the others numbered in the order they started), named from what the child wrote down."""
    described = json.loads(names_file.read_text())
    names: list[str] = described["names"]
    files = list(out.glob(f"cg.{described['pid']}-*"))
    # More files than threads started through ``threading``: one started otherwise shifts the numbers.
    certain = not described["reused"] and len(files) <= len(names) + 1
    threads: dict[str, int] = {}
    for path in out.glob("cg.*-*"):  # a sink's process (valgrind follows it), counted as one
        if path not in files and (match := _TOTALS.search(path.read_bytes())) is not None:
            threads[OTHER_PROCESSES] = threads.get(OTHER_PROCESSES, 0) + int(match.group(1))
    for path in files:
        match = _TOTALS.search(path.read_bytes())
        if match is None:
            continue
        number = int(path.name.rsplit("-", 1)[1])
        if number == 1:
            name = "caller"
        elif certain and number - 2 < len(names):
            name = names[number - 2]
        else:
            name = f"thread {number}"
        threads[name] = threads.get(name, 0) + int(match.group(1))
    return Run(threads)


def per_invoke(short: Run, long: Run, invokes: int) -> dict[str, float]:
    """Instructions per invoke on each thread: the long run's extra over the short one's."""
    names = set(short.threads) | set(long.threads)
    return {name: (long.threads.get(name, 0) - short.threads.get(name, 0)) / invokes for name in names}


def measure(configs: Sequence[str], invokes: int, jobs: int, receiver_url: str | None) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        work = Path(tmp)
        futures = {(config, n): pool.submit(run_once, config, n, receiver_url, work)
                   for config in configs for n in (SHORT, SHORT + invokes)}
        return {config: per_invoke(futures[(config, SHORT)].result(), futures[(config, SHORT + invokes)].result(),
                                   invokes)
                for config in configs}


def report(results: dict[str, dict[str, float]]) -> None:
    bare = results[NONE]["caller"]
    langfuse = results.get(LANGFUSE)
    langfuse_added = sum(langfuse.values()) - bare if langfuse else None
    rows = []
    for config, threads in results.items():
        caller = threads["caller"]
        background = sum(v for name, v in threads.items() if name != "caller")
        added = caller + background - bare
        by_thread = ", ".join(f"{name} {value / 1e6:.3f}" for name, value in
                              sorted(threads.items(), key=lambda kv: -kv[1]) if name != "caller" and value > 500)
        rows.append([config, f"{caller / 1e6:.3f}", f"{(caller - bare) / 1e6:+.3f}", f"{background / 1e6:.3f}",
                     f"{added / 1e6:+.3f}", f"{added / bare:.3f}x",
                     f"{added / langfuse_added:.3f}x" if langfuse_added else "",
                     by_thread or "none"])
    print(f"\nBare invoke: {bare / 1e6:.3f} M instructions"
          + (f"; Langfuse's handler adds {langfuse_added / 1e6:.3f} M" if langfuse_added else "") + "\n")
    print(markdown_table(["config", "caller (M)", "caller added", "other threads, processes (M)", "added in all (M)",
                          "added x bare", "added x Langfuse's", "by name (M)"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--invokes", type=int, default=200, help="extra invokes of the long run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs under valgrind at once")
    parser.add_argument("--configs", help="a subset, separated by ';', of: " + "; ".join(CONFIGS))
    parser.add_argument("--no-langfuse", action="store_true", help="leave out Langfuse's handler")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    parser.add_argument("--names-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.invokes, args.receiver, args.names_file)
        return
    configs = [c.strip() for c in args.configs.split(";")] if args.configs else list(CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {'; '.join(CONFIGS)}")
    if args.no_langfuse and LANGFUSE in configs:
        configs.remove(LANGFUSE)
    if args.quick:
        args.invokes, configs = 2, [NONE, OURS]
    if NONE not in configs:
        configs.insert(0, NONE)
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (Debian: apt-get install valgrind); nothing measured")
        return
    machine = describe_machine()
    print(f"instructions: {args.invokes} extra invokes, {len(configs)} configs, {args.jobs} at a time\n"
          f"machine: {machine}", flush=True)
    with ExitStack() as stack:
        receiver = stack.enter_context(langfuse_receiver()) if LANGFUSE in configs else None
        results = measure(configs, args.invokes, args.jobs, receiver)
    print(f"\n### Instructions per graph invoke (`python -m benchmarks.instructions`)\n\nMachine: {machine}")
    report(results)


if __name__ == "__main__":
    main()
