"""What the tiktoken fallback costs per LLM call, and how often the demo needs it.

    python -m benchmarks.tokens [--rounds 15] [--per-round 300] [--demo-runs 30] [--quick]

Part 1, interleaved: the enricher (the worker-side step that reads usage, estimates and prices) on one
LLM call with a ~2,000-character prompt, when the provider reported usage (the baseline) and when it did
not, so tokens are counted with tiktoken (the fallback). Bare ``count_tokens`` on the same prompt is
shown for both encodings we pick (o200k_base for GPT-4o-family names, cl100k_base otherwise). The
fallback runs on the pipeline's dispatcher thread, never on the caller's.

Part 2: ``vital_callbacks.testing.demo.run_demo`` with our handler on an in-memory sink; how many of its LLM
calls were estimated (``handler.stats()["estimated_calls"]``) out of all LLM calls.
"""

from __future__ import annotations

import argparse
import uuid

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from benchmarks._common import describe_machine, interleaved, markdown_table, median
from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.enrich import Enricher
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.providers.tokens import count_tokens, get_encoding
from vital_callbacks.providers.usage import snapshot
from vital_callbacks.testing.demo import run_demo

SENTENCE = "The agent looked up the invoice, compared it with last month's usage, and drafted a reply. "
PROMPT = (SENTENCE * (2000 // len(SENTENCE) + 1))[:2000]
COMPLETION = "The March invoice is 12% higher because cached input tokens were billed at the full rate."


def llm_event(model: str, *, with_usage: bool) -> LLMCall:
    """An LLM call as the handler hands it to the pipeline: raw prompt and raw result, not yet priced."""
    usage = {"input_tokens": 420, "output_tokens": 20, "total_tokens": 440} if with_usage else None
    message = AIMessage(COMPLETION, usage_metadata=usage,
                        response_metadata={"model_name": model, "finish_reason": "stop"})
    run_id = str(uuid.uuid4())
    return LLMCall(run_id=run_id, parent_run_id=None, trace_id=run_id, tenant_id="acme", provider="openai",
                   model=model, requested_model=model, token_source="none",
                   raw_input=[[HumanMessage(PROMPT)]],
                   raw_output=snapshot(LLMResult(generations=[[ChatGeneration(message=message)]])))


def per_call(rounds: int, per_round: int) -> list[list[object]]:
    enricher = Enricher(PriceBook([]))
    model = "gpt-4o-mini"
    provider_event, bare_event = llm_event(model, with_usage=True), llm_event(model, with_usage=False)
    for name in ("o200k_base", "cl100k_base"):
        get_encoding(name)  # loaded once per process; not part of the per-call cost
    estimated = enricher(bare_event)
    assert isinstance(estimated, LLMCall) and estimated.token_source == "estimate", estimated
    cases = {
        "enrich, provider usage (baseline)": lambda: enricher(provider_event),
        "enrich, tiktoken fallback": lambda: enricher(bare_event),
        "count_tokens, o200k_base (gpt-4o-mini)": lambda: count_tokens(PROMPT, model),
        "count_tokens, cl100k_base (claude-haiku-4-5)": lambda: count_tokens(PROMPT, "claude-haiku-4-5"),
    }
    samples = interleaved(cases, rounds=rounds, per_round=per_round)
    base = median(samples["enrich, provider usage (baseline)"])
    return [[name, f"{median(values) * 1e6:.1f}", f"{(median(values) - base) * 1e6:+.1f}",
             f"{median(values) / base:.2f}x"] for name, values in samples.items()]


def demo_share(runs: int) -> tuple[int, int, dict[str, int]]:
    """(estimated calls, LLM calls, LLM calls by token source) over ``runs`` demo runs."""
    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink])
    run_demo(handler, runs=runs)
    handler.flush(60)
    estimated = int(handler.stats()["estimated_calls"])
    handler.shutdown(30)
    calls = [e for e in sink.events if isinstance(e, LLMCall)]
    sources: dict[str, int] = {}
    for call in calls:
        sources[call.token_source] = sources.get(call.token_source, 0) + 1
    return estimated, len(calls), sources


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=300)
    parser.add_argument("--demo-runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="smallest sizes (smoke test); figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.per_round, args.demo_runs = 2, 5, 2
    machine = describe_machine()
    print(f"tokens: {args.rounds} rounds x {args.per_round} calls\nmachine: {machine}", flush=True)
    rows = per_call(args.rounds, args.per_round)
    estimated, calls, sources = demo_share(args.demo_runs)
    print(f"\n### Token estimates (`python -m benchmarks.tokens`)\n\nMachine: {machine}\n")
    print(f"One LLM call, {len(PROMPT):,}-character prompt; medians of {args.rounds} interleaved rounds; "
          "runs on the dispatcher thread.\n")
    print(markdown_table(["step", "us / call", "added us vs baseline", "vs baseline"], rows))
    share = f"{estimated / calls:.1%}" if calls else "n/a"
    print(f"\nDemo (`run_demo`, {args.demo_runs} runs): {estimated} of {calls} LLM calls estimated with tiktoken "
          f"({share}); token sources {sources}.")


if __name__ == "__main__":
    main()
