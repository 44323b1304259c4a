"""The metric families of the Prometheus sink: names, labels, buckets, in one place.

The dashboards (``integrations/grafana``) and alert rules (``integrations/prometheus``) are written
against these names with the default ``vital_`` prefix, so a rename here is a rename there.
Everything is created on the registry the sink is given, so tests use a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vital_callbacks.core.events import TokenUsage


def multiprocess_mode() -> bool:
    """prometheus_client picks file-backed values when this is set before it is imported."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
                   60.0, 90.0, 120.0)
"""LLM calls take from tens of milliseconds (a cache) to minutes (long reasoning)."""
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Nodes, tools, retrievers and whole graphs: from a dictionary lookup to a multi-call agent."""
COST_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DOCUMENT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

TOKEN_KINDS = (("input", "uncached"), ("input", "cache_read"), ("input", "cache_write"), ("input", "audio"),
               ("output", "text"), ("output", "reasoning"), ("output", "audio"))
"""The ``(type, kind)`` label pairs of ``llm_tokens_total``, in the order of :func:`split_tokens`.

Kinds are exclusive, so every sum over the family means something: summed over ``kind`` they are the
call's input (``type="input"``) or output (``type="output"``) tokens, summed over everything its input
plus output. ``type`` keeps the meaning (and the values) of OpenTelemetry's ``gen_ai.token.type``.
Cached audio counts as ``cache_read``, so that kind is every cache read; input ``audio`` is the rest."""

TOKENS_HELP = ("LLM tokens. type: input | output. kind (exclusive, so kinds sum to their type and "
               "everything to input + output): input = uncached + cache_read + cache_write + audio (not "
               "read from cache); output = text + reasoning + audio.")

TokenSplit = tuple[int, int, int, int, int, int, int]


def split_tokens(usage: TokenUsage) -> TokenSplit:
    """A call's tokens as the exclusive kinds of :data:`TOKEN_KINDS`.

    ``TokenUsage`` details are parts of ``input`` / ``output``, not addends, so the plain kinds are what
    is left. Cached audio is a part of both ``cache_read`` and ``input_audio``; it is counted once, as a
    cache read. A provider reporting more detail than the total it belongs to gets the detail capped
    rather than a negative remainder: the totals are what cost and rate limits are measured in, so they
    must stay exact, and a counter cannot go down."""
    inp, out = max(usage.input, 0), max(usage.output, 0)
    read = min(max(usage.cache_read, 0), inp)
    write = min(max(usage.cache_write, 0), inp - read)
    audio_in = min(max(usage.input_audio - max(usage.cache_audio_read, 0), 0), inp - read - write)
    reasoning = min(max(usage.reasoning, 0), out)
    audio_out = min(max(usage.output_audio, 0), out - reasoning)
    return (inp - read - write - audio_in, read, write, audio_in,
            out - reasoning - audio_out, reasoning, audio_out)


@dataclass(frozen=True)
class Metrics:
    """Every metric family the sink records, created once per registry."""

    llm_requests: Counter
    llm_tokens: Counter
    llm_cost: Counter
    llm_duration: Histogram
    llm_ttft: Histogram
    llm_cache_requests: Counter
    llm_cost_saved: Counter
    unpriced_calls: Counter
    node_cost: Counter
    tool_calls: Counter
    tool_duration: Histogram
    retriever_calls: Counter
    retriever_duration: Histogram
    retriever_documents: Histogram
    node_executions: Counter
    node_duration: Histogram
    graph_runs: Counter
    graph_duration: Histogram
    graph_cost: Histogram
    quality_score: Histogram
    degraded_responses: Counter
    build_info: Gauge
    # Only used in multiprocess mode; in one process a collector reads the pipeline at scrape time.
    events_dropped: Counter | None
    queue_depth: Gauge | None


DROPPED_HELP = ("Events not delivered, by sink and reason (queue full, rejected by the store, shut down with a "
                "backlog, ...); the pipeline's inbox is sink 'pipeline'.")


def create_metrics(registry: CollectorRegistry, prefix: str = "vital_", *, user_label: bool = False,
                   multiprocess: bool = False) -> Metrics:
    """Create the families on ``registry``; ``user_label`` adds ``user`` to the per-tenant ones."""
    p = prefix
    who = ("tenant", "user") if user_label else ("tenant",)

    def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
        return Counter(p + name, doc, labels, registry=registry)

    def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
        return Histogram(p + name, doc, labels, registry=registry, buckets=buckets)

    return Metrics(
        llm_requests=counter("llm_requests", "LLM calls by outcome.", ("provider", "model", "status", *who)),
        llm_tokens=counter("llm_tokens", TOKENS_HELP, ("provider", "model", *who, "type", "kind")),
        llm_cost=counter("llm_cost_usd", "USD spent on priced LLM calls.", ("provider", "model", *who)),
        llm_duration=histogram("llm_request_duration_seconds", "Provider latency of LLM calls (cache hits "
                               "excluded).", ("provider", "model"), LATENCY_BUCKETS),
        llm_ttft=histogram("llm_time_to_first_token_seconds", "Time to the first streamed token.",
                           ("provider", "model"), TTFT_BUCKETS),
        llm_cache_requests=counter("llm_cache_requests", "LLM calls answered by LangChain's response cache "
                                   "(hit) or the provider (miss).", ("model", "result")),
        llm_cost_saved=counter("llm_cost_saved_usd", "List price of the calls a cache hit avoided.",
                               ("provider", "model", *who)),
        unpriced_calls=counter("unpriced_calls", "LLM calls with tokens but no known price (their cost is "
                               "missing from llm_cost_usd_total).", ("provider", "model", *who)),
        node_cost=counter("node_cost_usd", "USD spent by LLM calls, by the graph node they ran in (subgraph: "
                          "the subgraph it is a node of, empty at the trace's own graph).",
                          ("graph", "subgraph", "node")),
        tool_calls=counter("tool_calls", "Tool calls by outcome.", ("tool", "status")),
        tool_duration=histogram("tool_duration_seconds", "Tool call latency.", ("tool",), STEP_BUCKETS),
        retriever_calls=counter("retriever_calls", "Retriever calls by outcome.", ("retriever", "status")),
        retriever_duration=histogram("retriever_duration_seconds", "Retriever latency.", ("retriever",),
                                     STEP_BUCKETS),
        retriever_documents=histogram("retriever_documents", "Documents returned per retriever call.",
                                      ("retriever",), DOCUMENT_BUCKETS),
        node_executions=counter("node_executions", "LangGraph node executions by outcome (subgraph: the "
                                "subgraph it is a node of, empty at the trace's own graph).",
                                ("graph", "subgraph", "node", "status")),
        node_duration=histogram("node_duration_seconds", "LangGraph node latency (subgraph: as on node_executions).",
                                ("graph", "subgraph", "node"), STEP_BUCKETS),
        graph_runs=counter("graph_runs", "Root graph runs (invoke/stream) by outcome.", ("graph", "status")),
        graph_duration=histogram("graph_duration_seconds", "Root graph run latency.", ("graph",),
                                 STEP_BUCKETS),
        graph_cost=histogram("graph_cost_usd", "USD cost of one root graph run.", ("graph",), COST_BUCKETS),
        quality_score=histogram("quality_score", "Numeric quality scores (evaluators, feedback), 0..1.",
                                ("name", "graph"), SCORE_BUCKETS),
        degraded_responses=counter("degraded_responses", "Scored responses below the quality threshold.",
                                   ("name", "graph")),
        build_info=Gauge(p + "build_info", "vital-callbacks build; always 1.", ("version", "python"),
                         registry=registry, multiprocess_mode="max"),
        events_dropped=counter("events_dropped", DROPPED_HELP, ("sink", "reason"))
        if multiprocess else None,
        queue_depth=Gauge(p + "sink_queue_depth", "Events waiting per sink queue.", ("sink",),
                          registry=registry, multiprocess_mode="livesum") if multiprocess else None,
    )
