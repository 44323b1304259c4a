"""Every benchmark of issue 8 at modest sizes, printed as one "Performance" section for the README.

    python -m benchmarks.run_all [--quick]

Each benchmark runs in its own process, one after the other (never in parallel: they would disturb
each other's timings; only under ``--quick``, whose figures mean nothing, do they run side by side),
with sizes that keep the whole run to a few minutes. Their progress lines go to stderr; their Markdown
sections (from the first ``###`` heading on) are printed in order, under
one heading, with the machine described once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._common import describe_machine

ROOT = Path(__file__).resolve().parent.parent
MODEST: dict[str, list[str]] = {
    "overhead": ["--rounds", "8", "--scale", "0.7"],
    "throughput": ["--traces", "2000", "--rounds", "3"],
    "soak": ["--invokes", "10000"],
    "tokens": [],
    "construction": [],
    "exit": [],
    "crash": ["--events", "5000", "--idle-ms", "300"],
    "budgets": ["--calls", "1000"],
    "cost_per_invoke": ["--rounds", "4", "--invokes", "200"],
    "stages": ["--rounds", "3", "--invokes", "500"],
}


def section(output: str) -> str:
    """The Markdown part of a benchmark's output, without its own machine line (printed once above)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("### ")), 0)
    return "\n".join(line for line in lines[start:] if not line.startswith("Machine: ")).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    machine = describe_machine()
    parts = []

    def run(name: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.perf_counter()
        command = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if args.quick else MODEST[name])]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True), time.perf_counter() - started

    # With --quick the figures mean nothing, so the benchmarks may run side by side; results stay in order.
    with ThreadPoolExecutor(max_workers=len(MODEST)) as pool:
        results = pool.map(run, MODEST) if args.quick else map(run, MODEST)  # map: each after the last
        for name, (done, seconds) in zip(MODEST, results, strict=True):
            print(f"{name}: {seconds:.0f} s, exit {done.returncode}", file=sys.stderr, flush=True)
            if done.returncode != 0:
                raise SystemExit(f"benchmarks.{name} failed:\n{done.stderr[-4000:]}")
            parts.append(section(done.stdout))
    print("## Performance\n")
    print(f"Machine: {machine}. Made with `python -m benchmarks.run_all`; each benchmark also runs alone as "
          "`python -m benchmarks.<name>` (larger default sizes).\n")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
