"""Caller-side overhead per graph invoke: our handler + Langfuse sink vs ``langfuse.langchain.CallbackHandler``.

    python -m benchmarks.langfuse_overhead [--rounds 30] [--per-round 20]

The reference graph (real LangGraph, fake models) runs with no callbacks (baseline), with our handler
exporting to Langfuse, and with Langfuse's own LangChain handler; both export with the real SDK to a
local receiver. Blocks of invokes are interleaved (the order rotates every round) so drift hits all
three alike; between blocks both clients are flushed, untimed, so one's background export does not
land in the other's timing. Printed: median time per invoke, overhead over the baseline, and the
ratio of our overhead to Langfuse's (below 1.0 means ours costs the workflow less).
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Callable
from typing import Any

from langfuse import Langfuse
from langfuse.langchain import CallbackHandler

from benchmarks._common import time_block
from tests.graphs import INPUT, METADATA, build_graph
from tests.langfuse_receiver import LangfuseReceiver
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.sinks.langfuse import LangfuseSink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("langfuse").setLevel(logging.ERROR)

    with LangfuseReceiver() as rx:
        graph = build_graph()
        sink = LangfuseSink(public_key="pk-bench-vital", secret_key="sk-bench", base_url=rx.url)
        ours = VitalCallbackHandler(Settings(), sinks=[sink])
        theirs_client = Langfuse(public_key="pk-bench-lf", secret_key="sk-bench", base_url=rx.url)
        theirs = CallbackHandler(public_key="pk-bench-lf")

        def invoke(callbacks: list[Any]) -> Callable[[], object]:
            config: dict[str, Any] = {"metadata": METADATA}
            if callbacks:
                config["callbacks"] = callbacks
            return lambda: graph.invoke(INPUT, config=config)

        configs: dict[str, Callable[[], object]] = {
            "no callbacks": invoke([]),
            "vital + langfuse sink": invoke([ours]),
            "langfuse CallbackHandler": invoke([theirs]),
        }
        for fn in configs.values():  # warm-up: imports, caches, connections
            time_block(fn, 5)
        ours.flush(30)
        theirs_client.flush()

        samples: dict[str, list[float]] = {name: [] for name in configs}
        names = list(configs)
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(time_block(configs[name], args.per_round))
                ours.flush(30)
                theirs_client.flush()

        ours.shutdown()
        theirs_client.shutdown()
        spans = len(rx.received())

    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["no callbacks"]
    print(f"{args.rounds} interleaved rounds x {args.per_round} invokes; {spans} spans received\n")
    print(f"{'configuration':<28}{'ms/invoke':>12}{'overhead ms':>14}")
    for name, value in median.items():
        print(f"{name:<28}{value * 1e3:>12.3f}{(value - base) * 1e3:>14.3f}")
    ours_over = median["vital + langfuse sink"] - base
    theirs_over = median["langfuse CallbackHandler"] - base
    print(f"\noverhead ratio vital / langfuse: {ours_over / theirs_over:.2f}" if theirs_over > 0 else "")
    time_ratio = median["vital + langfuse sink"] / median["langfuse CallbackHandler"]
    print(f"time ratio vital / langfuse:     {time_ratio:.2f}")


if __name__ == "__main__":
    main()
