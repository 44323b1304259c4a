"""Cost of the Prometheus sink per LLM call, against a bare ``Counter.inc`` + ``Histogram.observe``.

    python -m benchmarks.prometheus_sink [--rounds 30] [--per-round 5000]

Three cases, measured interleaved in one run (blocks rotate every round):

* ``bare``: what a hand-instrumented app pays per call: one labelled ``Counter.inc`` and one
  labelled ``Histogram.observe``;
* ``sink``: ``PrometheusSink.record`` of one priced LLM call (requests, the seven exclusive token kinds, cost, node
  cost, cache result, latency): the work our sink does per call, on the pipeline's worker thread;
* ``caller``: what the caller's thread pays per LLM call with a Prometheus-sink pipeline attached:
  the handler's ``on_chat_model_start`` + ``on_llm_end`` (the sink itself runs on the worker).

Printed: median microseconds per call and each case's ratio to ``bare``.
"""

from __future__ import annotations

import argparse
import uuid
from decimal import Decimal

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from prometheus_client import CollectorRegistry, Counter, Histogram

from benchmarks._common import interleaved, machine, median
from vital_callbacks import Cost, LLMCall, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.sinks.prometheus import PrometheusSink


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=5000)
    args = parser.parse_args()

    bare_registry = CollectorRegistry()
    counter = Counter("bare_requests", "bare", ("provider", "model"), registry=bare_registry)
    histogram = Histogram("bare_duration_seconds", "bare", ("provider", "model"), registry=bare_registry)

    def bare() -> None:
        counter.labels("openai", "gpt-4o").inc()
        histogram.labels("openai", "gpt-4o").observe(0.42)

    sink = PrometheusSink(registry=CollectorRegistry())
    event = LLMCall(run_id="r", parent_run_id="p", trace_id="t", tenant_id="acme", user_id="u1", graph="agent",
                    node="plan", provider="openai", model="gpt-4o", duration_s=0.42, time_to_first_token_s=0.1,
                    usage=TokenUsage(input=1200, output=350, total=1550, cache_read=1024, reasoning=256),
                    cost=Cost(Decimal("0.001"), Decimal("0.0035"), Decimal("0.0045")))

    def record() -> None:
        sink.record(event)

    handler = VitalCallbackHandler(Settings(queue_size=10_000_000),
                                   sinks=[PrometheusSink(registry=CollectorRegistry())])
    messages = [[HumanMessage("plan for what does it cost?")]]
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("a b c"))]])
    serialized = {"kwargs": {"model_name": "gpt-4o"}}
    metadata = {"tenant_id": "acme", "ls_provider": "openai", "ls_model_name": "gpt-4o"}

    def caller() -> None:
        run_id = uuid.uuid4()
        handler.on_chat_model_start(serialized, messages, run_id=run_id, metadata=metadata)
        handler.on_llm_end(result, run_id=run_id)

    samples = interleaved({"bare": bare, "sink": record, "caller": caller}, rounds=args.rounds,
                          per_round=args.per_round)
    handler.shutdown(60)
    base = median(samples["bare"])
    print(f"prometheus sink per LLM call ({args.rounds} rounds x {args.per_round} calls; {machine()})")
    for name, label in (("bare", "bare Counter.inc + Histogram.observe"),
                        ("sink", "PrometheusSink.record (worker thread)"),
                        ("caller", "handler start+end, caller's thread")):
        value = median(samples[name])
        print(f"  {label:<40} {value * 1e6:8.2f} us   x{value / base:5.2f} of bare")


if __name__ == "__main__":
    main()
