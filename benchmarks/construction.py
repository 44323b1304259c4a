"""What building a handler per request costs: median µs per construction, against LangChain's own handlers.

    python -m benchmarks.construction [--rounds 15] [--per-round 2000] [--quick]

A handler is a view on the process's runtime, so building one per request (from the environment, with
a tenant, with ``budgets=``) must add no thread, engine or query; the runtime itself is built once,
before the clock. ``Settings()`` is timed too: reading every ``VITAL_*`` variable is what each handler
used to pay. Blocks are interleaved (A B C ... A B C ...) so drift hits every case alike; the thread
count is checked before and after all blocks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
from collections.abc import Callable
from decimal import Decimal

from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler

from benchmarks._common import describe_machine, interleaved, median
from vital_callbacks import Budget, Settings, VitalCallbackHandler
from vital_callbacks.runtime import default_runtime, shutdown_default

TARGET_US = 50.0


def cases() -> dict[str, Callable[[], object]]:
    budget = Budget(scope="tenant", amount_usd=Decimal(5), action="stop")
    settings = Settings(database_url=os.environ["VITAL_DATABASE_URL"], capture_content=True)
    VitalCallbackHandler(settings)  # its runtime, built once before the clock
    counter = iter(range(10**9))
    return {
        "BaseCallbackHandler() (baseline)": BaseCallbackHandler,
        "UsageMetadataCallbackHandler()": UsageMetadataCallbackHandler,
        "VitalCallbackHandler()": VitalCallbackHandler,
        "VitalCallbackHandler(tenant_id=...)": lambda: VitalCallbackHandler(tenant_id=f"t{next(counter) % 1000}"),
        "VitalCallbackHandler(budgets=[...])": lambda: VitalCallbackHandler(budgets=[budget]),
        "VitalCallbackHandler(settings)": lambda: VitalCallbackHandler(settings),
        "Settings() (reads the environment)": Settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    rounds, per_round = (2, 50) if args.quick else (args.rounds, args.per_round)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VITAL_DATABASE_URL"] = f"sqlite:///{tmp}/construction.db"
        default_runtime()  # built once, outside the clock, as in a process that serves requests
        VitalCallbackHandler(budgets=[Budget(scope="tenant", amount_usd=Decimal(5), action="stop")])
        chosen = cases()
        threads_before = threading.active_count()
        samples = interleaved(chosen, rounds=rounds, per_round=per_round)
        threads_after = threading.active_count()
        shutdown_default(5.0)
    base = median(samples["BaseCallbackHandler() (baseline)"])
    print(f"Machine: {describe_machine()}\n")
    print("### Handler construction\n")
    print(f"Median µs per construction over {rounds} interleaved rounds of {per_round}; threads before the "
          f"blocks {threads_before}, after {threads_after}.\n")
    print("| case | µs per construction | vs BaseCallbackHandler() |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {median(values) * 1e6:.2f} | {median(values) / base:.1f}x |")
    ours = max(median(samples[n]) for n in samples if n.startswith("VitalCallbackHandler")) * 1e6
    verdict = "met" if ours < TARGET_US else "missed"
    print(f"\nSlowest of ours: {ours:.2f} µs (target < {TARGET_US:.0f} µs: {verdict}); "
          f"threads added by the blocks: {threads_after - threads_before}.")


if __name__ == "__main__":
    main()
