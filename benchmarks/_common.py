"""Shared helpers: interleaved A/B timing with the GC paused, medians, and the machine it ran on."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping


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
