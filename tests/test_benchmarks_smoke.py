"""Every benchmark still runs end to end at its smallest size (figures are not checked: no timed assertions).

``python -m benchmarks.run_all --quick`` runs once for the module: it runs each benchmark once, in its own
process, as ``python -m benchmarks.<name> --quick``, and each of those processes is recorded on the way,
so no benchmark runs twice.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import run_all


@dataclass
class QuickRun:
    out: str = ""  # what run_all printed
    failure: str = ""  # run_all's exit message when a benchmark failed
    runs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)  # each benchmark's process


@pytest.fixture(scope="module")
def quick_run() -> QuickRun:
    """``run_all --quick`` in this process, recording each benchmark's own process (the real one, unchanged)."""
    run = QuickRun()
    real_run = subprocess.run

    def recording_run(command: list[str], *args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("timeout", 300)
        done: subprocess.CompletedProcess[str] = real_run(command, *args, **kwargs)
        run.runs[command[2].removeprefix("benchmarks.")] = done
        return done

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(run_all, "subprocess", SimpleNamespace(run=recording_run))  # run_all's calls only
        mp.setattr(sys, "argv", ["run_all", "--quick"])
        try:
            run_all.main()
        except SystemExit as failed:
            run.failure = str(failed)
    run.out = printed.getvalue()
    return run


def benchmark_output(quick_run: QuickRun, name: str) -> str:
    assert name in quick_run.runs, f"benchmarks.{name} did not run: {quick_run.failure}"
    done = quick_run.runs[name]
    assert done.args == [sys.executable, "-m", f"benchmarks.{name}", "--quick"]
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.mark.parametrize("name", [*run_all.MODEST, "run_all"])
def test_benchmark_runs_and_prints_a_markdown_table(quick_run: QuickRun, name: str) -> None:
    """``python -m benchmarks.<name> --quick`` exits 0 and prints the machine and a Markdown table."""
    if name == "run_all":
        assert not quick_run.failure, quick_run.failure
        out = quick_run.out
    else:
        out = benchmark_output(quick_run, name)
    assert "Machine: " in out
    assert "|---|" in out


def test_overhead_reports_the_targets_against_the_competing_handlers(quick_run: QuickRun) -> None:
    """The overhead table names the baseline, the handlers users would pick instead, and the targets."""
    out = benchmark_output(quick_run, "overhead")
    for case in ("no callbacks", "UsageMetadataCallbackHandler", "langfuse CallbackHandler",
                 "vital: sql + prometheus", "run_inline=False", "#### targets"):
        assert case in out
