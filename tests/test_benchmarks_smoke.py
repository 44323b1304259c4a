"""Every benchmark still runs end to end at its smallest size (figures are not checked: no timed assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.mark.parametrize("name", ["overhead", "throughput", "soak", "tokens", "run_all"])
def test_benchmark_runs_and_prints_a_markdown_table(name: str) -> None:
    """``python -m benchmarks.<name> --quick`` exits 0 and prints the machine and a Markdown table."""
    out = run_benchmark(name)
    assert "Machine: " in out
    assert "|---|" in out


def test_overhead_reports_the_targets_against_the_competing_handlers() -> None:
    """The overhead table names the baseline, the handlers users would pick instead, and the targets."""
    out = run_benchmark("overhead", "--workloads", "chat,linear", "--no-langfuse")
    for case in ("no callbacks", "UsageMetadataCallbackHandler", "vital: sql + prometheus",
                 "run_inline=False", "#### targets"):
        assert case in out
