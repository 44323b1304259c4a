"""What interpreter exit costs when the store is down: seconds spent in the exit hooks after the last call.

    python -m benchmarks.exit [--runs 3] [--calls 2000] [--quick]

Each run is a fresh process that sends ``--calls`` LLM calls to a PostgreSQL store that either refuses
connections (nothing listens on the port) or hangs (a local socket that accepts and never answers),
waits one second so the sink is already failing, and exits without a flush. A hook registered before
the runtime's (so it runs after it) prints the seconds since the last call; the baseline is the same
process with an in-memory sink. Targets: refusing adds at most 1 s; hanging at most
``VITAL_SHUTDOWN_TIMEOUT_S`` (2 s here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

from benchmarks._common import describe_machine
from vital_callbacks.testing.servers import HungServer, closed_port

ROOT = Path(__file__).resolve().parent.parent
SHUTDOWN_S = 2.0

SCRIPT = """
import atexit, sys, time
atexit.register(lambda: print(f"EXIT {{time.monotonic() - done[0]:.3f}}", file=sys.stderr))
done = [0.0]
from langchain_core.messages.ai import UsageMetadata
from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler
from vital_callbacks.testing.fakes import ScriptedChatModel
llm = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"],
                        usage=UsageMetadata(input_tokens=10, output_tokens=5, total_tokens=15))
settings = Settings(database_url={url!r}, sinks=["sql"], spill_dir={spill!r}, shutdown_timeout_s={shutdown})
handler = VitalCallbackHandler(settings, sinks=[InMemorySink()]) if {memory} else VitalCallbackHandler(settings)
for _ in range({calls}):
    llm.invoke("hi", config={{"callbacks": [handler]}})
time.sleep(1.0)
done[0] = time.monotonic()
"""



def exit_seconds(url: str, calls: int, *, memory: bool = False, sink_processes: bool = False) -> float:
    with tempfile.TemporaryDirectory() as spill:
        script = textwrap.dedent(SCRIPT.format(url=url, spill=spill, shutdown=SHUTDOWN_S, memory=memory,
                                               calls=calls))
        env = {**os.environ, "VITAL_SINK_PROCESSES": "sql" if sink_processes else ""}
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=env)
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("EXIT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sink-processes", action="store_true",
                        help="the SQL sink in a process of its own (VITAL_SINK_PROCESSES=sql)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    own = args.sink_processes
    runs, calls = (1, 50) if args.quick else (args.runs, args.calls)
    hung = HungServer()
    try:
        cases: dict[str, Callable[[], float]] = {
            "in-memory sink (baseline)": lambda: exit_seconds("sqlite://", calls, memory=True),
            "PostgreSQL refusing connections": lambda: exit_seconds(f"postgresql://u@127.0.0.1:{closed_port()}/db",
                                                                    calls, sink_processes=own),
            "PostgreSQL hanging": lambda: exit_seconds(f"postgresql://u@127.0.0.1:{hung.port}/db", calls,
                                                       sink_processes=own),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):  # interleaved: one run of each case per round
            for name, case in cases.items():
                samples[name].append(case())
    finally:
        hung.close()
    print(f"Machine: {describe_machine()}\n")
    print(f"### Exit with the store down{' (the SQL sink in a process of its own)' if own else ''}\n")
    print(f"Seconds in the exit hooks after the last of {calls} calls, median of {runs} fresh processes "
          f"(VITAL_SHUTDOWN_TIMEOUT_S={SHUTDOWN_S:g}).\n")
    print("| case | exit s | added over baseline | target |")
    print("|---|---:|---:|---|")
    base = statistics.median(samples["in-memory sink (baseline)"])
    targets = {"PostgreSQL refusing connections": 1.0, "PostgreSQL hanging": SHUTDOWN_S}
    for name, values in samples.items():
        value = statistics.median(values)
        target = targets.get(name)
        verdict = "-" if target is None else f"<= {target:g} s: {'met' if value - base <= target else 'missed'}"
        print(f"| {name} | {value:.3f} | {value - base:+.3f} | {verdict} |")


if __name__ == "__main__":
    main()
