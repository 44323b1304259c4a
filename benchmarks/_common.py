"""Shared helpers: interleaved A/B timing with the GC paused, medians, and the machine it ran on."""

from __future__ import annotations

import gc
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path


def time_block(fn: Callable[[], object], n: int) -> float:
    """Seconds per call of ``fn``, over ``n`` calls, with the GC paused."""
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n
    finally:
        gc.enable()


def interleaved(cases: Mapping[str, Callable[[], object]], *, rounds: int, per_round: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Per-call seconds of each case, one block per case per round; the order rotates every round so
    drift (frequency scaling, a noisy neighbour) hits every case alike."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            seconds = time_block(cases[name], per_round)
            if r >= warmup:
                samples[name].append(seconds)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    return (f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, {platform.platform(terse=True)}; {sys.version.split()[0]}")


# -- shared by overhead / throughput / soak / tokens ---------------------------------------------------

BENCH_PACKAGES = ("langchain-core", "langgraph", "langfuse", "prometheus-client", "sqlalchemy", "opentelemetry-sdk",
                  "tiktoken", "vital-callbacks")


def describe_machine(packages: Sequence[str] = BENCH_PACKAGES) -> str:
    """CPU model, cores, Python, package versions and the load average at start, as one Markdown-safe line."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return (f"{model}, {os.cpu_count()} cores; {platform.python_implementation()} {platform.python_version()}; "
            f"{'; '.join(versions)}; load average at start {load}")


def run_interleaved(cases: Mapping[str, Callable[[int], float]], *, rounds: int, per_round: int, warmup: int = 1,
                    between: Callable[[str], object] | None = None) -> dict[str, list[float]]:
    """Like :func:`interleaved`, for cases that time themselves: ``case(n)`` runs ``n`` calls and returns
    the seconds they took (so async cases can time inside their event loop and a case can leave untimed
    work out). ``between(name)`` runs untimed after each block, e.g. to flush a case's background export
    so it does not land in the next case's block. The order rotates every round."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()  # every block starts from the same heap state; GC stays on inside (it is real cost)
            seconds = cases[name](per_round) / per_round
            if between is not None:
                between(name)
            if r >= warmup:
                samples[name].append(seconds)
    return samples


def paired_delta(samples: Mapping[str, list[float]], case: str, base: str) -> float:
    """Median over rounds of ``case - base`` within the same round (pairs cancel slow drift)."""
    return statistics.median(c - b for c, b in zip(samples[case], samples[base], strict=True))


def spread(samples: Mapping[str, list[float]], case: str, base: str) -> float:
    """Half the inter-quartile range of the paired deltas: how far to trust :func:`paired_delta`."""
    deltas = sorted(c - b for c, b in zip(samples[case], samples[base], strict=True))
    if len(deltas) < 4:
        return 0.0
    q = statistics.quantiles(deltas, n=4)
    return (q[2] - q[0]) / 2


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table, ready to paste into the README's "Performance" section."""
    align = "|".join("---:" if i else "---" for i in range(len(headers)))
    lines = ["| " + " | ".join(headers) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of this process, or of process ``pid`` (``/proc/<pid>/statm``; psutil elsewhere)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        psutil = importlib.import_module("psutil")  # only off Linux; no stubs needed
        return int(psutil.Process(pid).memory_info().rss)


@contextmanager
def langfuse_receiver() -> Iterator[str]:
    """``tests.langfuse_receiver`` in a child process; yields its base URL.

    A separate process, as a real Langfuse server would be: decoding the SDK's OTLP requests must not
    compete for this process's GIL and be billed to the handler under test.
    """
    code = ("import sys, time\nfrom tests.langfuse_receiver import LangfuseReceiver\n"
            "with LangfuseReceiver() as rx:\n    print(rx.url, flush=True)\n    sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=str(Path(__file__).resolve().parent.parent))
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
