"""The Langfuse sink against the real ``langfuse`` SDK, exporting over HTTP to a local receiver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from sqlalchemy import text

from tests.graphs import DRAFT_USAGE, FANOUT, INPUT, METADATA, PLAN_USAGE, build_graph
from tests.langfuse_receiver import PROJECT_ID, LangfuseReceiver, ReceivedSpan
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.runtime.registry import sink_class
from vital_callbacks.sinks.langfuse import LangfuseSink, langfuse_trace_id, sampled
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.testing.servers import closed_port

SECRET_PROMPT = "mail alice@example.com, key sk-proj-abcdefghijklmnop1234, card 4111 1111 1111 1111"


@pytest.fixture
def receiver() -> Iterator[LangfuseReceiver]:
    with LangfuseReceiver() as rx:
        yield rx


def make_sink(url: str, **kwargs: Any) -> LangfuseSink:
    # A fresh public key per sink: the SDK keeps one client per key for the whole process.
    kwargs.setdefault("public_key", f"pk-lf-{uuid.uuid4().hex[:8]}")
    return LangfuseSink(secret_key="sk-lf-test", base_url=url, **kwargs)


def run(sinks: list[Any], inputs: Any = INPUT, *, flush: bool = True,
        **settings: Any) -> tuple[Any, VitalCallbackHandler]:
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, shutdown_timeout_s=3, **settings), sinks=sinks)
    config = {"callbacks": [handler], "metadata": METADATA, "tags": ["nightly"]}
    result = build_graph().invoke(inputs, config=config)
    if flush:
        handler.flush(10)
    return result, handler



def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def test_reference_graph_becomes_one_langfuse_trace_mirroring_the_run_tree(receiver: LangfuseReceiver) -> None:
    """Every run of the reference graph arrives as an observation of one trace, typed and nested as it ran."""
    sink = make_sink(receiver.url)
    _, handler = run([sink])
    handler.shutdown()
    spans = receiver.received()
    assert handler.last_trace_id is not None
    assert {s.trace_id for s in spans} == {langfuse_trace_id(handler.last_trace_id)}
    # graph, nodes (retrieve, plan, research x FANOUT, summarize, its subgraph's draft), LLMs, tools, retriever
    assert len(spans) == 1 + (4 + FANOUT) + 2 + FANOUT + 1
    root = by_name(spans, "research_agent")[0]
    assert (root.type, root.parent_span_id) == ("agent", None)
    for node in ("retrieve", "plan", "summarize"):
        (span,) = by_name(spans, node)
        assert (span.type, span.parent_span_id) == ("span", root.span_id)
        assert span.metadata("step") is not None and span.metadata("checkpoint_ns")
    research = by_name(spans, "research")
    assert len(research) == FANOUT and all(s.parent_span_id == root.span_id for s in research)
    tools = by_name(spans, "lookup")
    assert sorted(t.parent_span_id or "" for t in tools) == sorted(s.span_id for s in research)
    assert {t.type for t in tools} == {"tool"}
    (retriever,) = by_name(spans, "StaticRetriever")
    assert (retriever.type, retriever.parent_span_id) == ("retriever", by_name(spans, "retrieve")[0].span_id)
    (draft,) = by_name(spans, "draft")  # the subgraph's node nests under the node that runs the subgraph
    assert draft.parent_span_id == by_name(spans, "summarize")[0].span_id
    (plan_llm,) = by_name(spans, "o3-mini")
    (draft_llm,) = by_name(spans, "claude-sonnet-4-5")
    assert plan_llm.type == draft_llm.type == "generation"
    assert plan_llm.parent_span_id == by_name(spans, "plan")[0].span_id
    assert draft_llm.parent_span_id == draft.span_id
    assert all(s.start_ns <= s.end_ns and root.start_ns <= s.start_ns for s in spans)


def test_generations_carry_model_usage_cost_and_trace_attributes(receiver: LangfuseReceiver) -> None:
    """A generation has model, parameters, Langfuse-style usage (cache and reasoning split out), our cost,
    and every observation carries user, session, tags, trace name and tenant."""
    sink = make_sink(receiver.url)
    _, handler = run([sink])
    handler.shutdown()
    spans = receiver.received()
    (plan_llm,) = by_name(spans, "o3-mini")
    assert plan_llm.attributes["langfuse.observation.model.name"] == "o3-mini"
    assert plan_llm.json("langfuse.observation.model.parameters") == {"temperature": 0.0}
    assert plan_llm.json("langfuse.observation.usage_details") == {
        "input": PLAN_USAGE["input_tokens"] - 1024, "input_cache_read": 1024,
        "output": PLAN_USAGE["output_tokens"] - 256, "output_reasoning": 256, "total": PLAN_USAGE["total_tokens"],
    }
    cost = plan_llm.json("langfuse.observation.cost_details")
    assert cost["total"] > 0 and cost["total"] == pytest.approx(cost["input"] + cost["output"])
    assert plan_llm.metadata("cache_hit") is False and plan_llm.metadata("provider") == "openai"
    (draft_llm,) = by_name(spans, "claude-sonnet-4-5")
    assert draft_llm.json("langfuse.observation.usage_details")["total"] == DRAFT_USAGE["total_tokens"]
    for span in spans:
        assert span.attributes["user.id"] == "u1" and span.attributes["session.id"] == "s1"
        assert span.attributes["langfuse.trace.name"] == "research_agent"
        assert list(span.attributes["langfuse.trace.tags"]) == ["nightly"]
        assert span.trace_metadata("tenant_id") == "acme" and span.trace_metadata("graph") == "research_agent"
        assert "langfuse.observation.input" not in span.attributes  # capture is off by default
    root = by_name(spans, "research_agent")[0]
    assert root.metadata("llm_calls") == 2


def test_langfuse_shows_the_same_numbers_as_the_sql_rows(receiver: LangfuseReceiver, tmp_path: Path) -> None:
    """For one run, each generation's tokens and cost equal its SQL row, and the root's totals the graph row."""
    sql = SQLSink(f"sqlite:///{tmp_path / 'v.db'}")
    sink = make_sink(receiver.url)
    _, handler = run([sql, sink])
    handler.shutdown()
    spans = {s.metadata("run_id"): s for s in receiver.received()}
    engine = SQLSink(f"sqlite:///{tmp_path / 'v.db'}").engine
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT run_id, input_tokens, output_tokens, total_tokens, cache_read_tokens, "
                                 "cache_write_tokens, reasoning_tokens, total_cost, input_cost, output_cost "
                                 "FROM llm_calls")).all()
        graph_row = conn.execute(text("SELECT run_id, cost_usd, total_tokens, llm_calls FROM graph_runs")).one()
        counts = sum(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in ("graph_runs", "node_runs", "llm_calls", "tool_calls", "retriever_calls"))
    assert counts == len(spans)
    assert len(rows) == 2
    for run_id, inp, out, total, cache_read, cache_write, reasoning, total_cost, in_cost, out_cost in rows:
        usage = spans[run_id].json("langfuse.observation.usage_details")
        assert usage["input"] + usage.get("input_cache_read", 0) + usage.get("input_cache_creation", 0) == inp
        assert usage["output"] + usage.get("output_reasoning", 0) == out
        assert (usage["total"], usage.get("input_cache_read", 0), usage.get("input_cache_creation", 0),
                usage.get("output_reasoning", 0)) == (total, cache_read, cache_write, reasoning)
        cost = spans[run_id].json("langfuse.observation.cost_details")
        assert (cost["total"], cost["input"], cost["output"]) == (float(total_cost), float(in_cost), float(out_cost))
    root = spans[graph_row.run_id]
    assert Decimal(root.metadata("cost_usd")) == Decimal(str(graph_row.cost_usd))
    assert (root.metadata("usage")["total"], root.metadata("llm_calls")) == (graph_row.total_tokens,
                                                                            graph_row.llm_calls)


def test_captured_content_is_redacted_before_it_is_sent(receiver: LangfuseReceiver) -> None:
    """With capture on, prompts reach Langfuse with e-mails, API keys and card numbers masked, plus the user hook."""
    sink = make_sink(receiver.url, capture_content=True, redact=lambda s: s.replace("plan for", "PLAN FOR"))
    run([sink], inputs={"question": SECRET_PROMPT}, capture_content=True)[1].shutdown()
    (plan_llm,) = by_name(receiver.received(), "o3-mini")
    sent = plan_llm.attributes["langfuse.observation.input"]
    assert sent.startswith("PLAN FOR mail [REDACTED_EMAIL]")
    assert "[REDACTED_API_KEY]" in sent and "[REDACTED_CARD]" in sent
    assert "alice@example.com" not in sent and "sk-proj" not in sent and "4111" not in sent
    assert plan_llm.attributes["langfuse.observation.output"] == "a b c"


def test_errors_are_sent_as_level_error_with_the_message(receiver: LangfuseReceiver) -> None:
    """A failing node and the graph it fails are ERROR observations whose status message names the error."""

    class S(TypedDict, total=False):
        x: int

    def explode(state: S) -> S:
        raise ValueError("disk full")

    g = StateGraph(S)
    g.add_node("explode", explode)
    g.add_edge(START, "explode")
    g.add_edge("explode", END)
    sink = make_sink(receiver.url)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink])
    with pytest.raises(ValueError):
        g.compile(name="broken").invoke({"x": 1}, config={"callbacks": [handler]})
    handler.shutdown()
    spans = receiver.received()
    assert {s.name for s in spans} == {"broken", "explode"}
    for span in spans:
        assert span.attributes["langfuse.observation.level"] == "ERROR"
        assert span.attributes["langfuse.observation.status_message"] == "ValueError: disk full"


def test_sampling_keeps_or_drops_whole_traces(receiver: LangfuseReceiver) -> None:
    """Sampling decides per trace id, the same way every time, so no trace is sent in part."""
    trace_ids = [str(uuid.uuid4()) for _ in range(400)]
    kept = [t for t in trace_ids if sampled(t, 0.5)]
    assert 100 < len(kept) < 300 and kept == [t for t in trace_ids if sampled(t, 0.5)]
    sink = make_sink(receiver.url, sample_rate=0.0)
    _, handler = run([sink])
    handler.shutdown()
    assert receiver.received() == [] and sink.sampled_out == 14 and handler.stats()["dropped"] == {}


def test_trace_id_and_url_can_be_read_back_from_the_handler(receiver: LangfuseReceiver) -> None:
    """``handler.last_trace_id`` maps to the Langfuse trace id and to a link into the Langfuse UI."""
    sink = make_sink(receiver.url)
    _, handler = run([sink])
    assert handler.last_trace_id is not None
    lf_id = sink.trace_id(handler.last_trace_id)
    assert lf_id == langfuse_trace_id(handler.last_trace_id) and len(lf_id) == 32
    assert sink.trace_url(handler.last_trace_id) == f"{receiver.url}/project/{PROJECT_ID}/traces/{lf_id}"
    handler.shutdown()


@pytest.mark.parametrize("failure", ["unreachable", "error", "sleep"])
def test_langfuse_down_or_slow_never_reaches_the_workflow(failure: str) -> None:
    """With Langfuse unreachable, failing or hanging, the workflow's result is unchanged, nothing is raised,
    shutdown returns, and the undelivered observations are counted as dropped for the langfuse sink."""
    expected, baseline = run([])
    baseline.shutdown()
    if failure == "unreachable":
        receiver = None
        url = f"http://127.0.0.1:{closed_port()}"
    else:
        receiver = LangfuseReceiver(mode="error" if failure == "error" else "sleep", sleep_s=30).__enter__()
        url = receiver.url
    try:
        sink = make_sink(url, timeout_s=1, shutdown_timeout_s=3)
        result, handler = run([sink], flush=False)
        assert result == expected
        assert handler.flush(10) is False  # the export failed: flush says so
        assert handler.stats()["dropped"] == {"langfuse": 14}
        assert sink.undelivered == 14 and sink.delivered == 0
        handler.shutdown()
    finally:
        if receiver is not None:
            receiver.close()


def test_a_shut_down_sink_frees_its_public_key_for_the_next_one(receiver: LangfuseReceiver) -> None:
    """The SDK keeps one client per public key; after shutdown a new sink with that key still delivers."""
    for _ in range(2):
        sink = make_sink(receiver.url, public_key="pk-lf-reused")
        run([sink])[1].shutdown()
    assert len({s.trace_id for s in receiver.received()}) == 2


def test_sink_is_enabled_by_langfuse_env_vars(monkeypatch: pytest.MonkeyPatch, receiver: LangfuseReceiver) -> None:
    """Langfuse's own env vars turn the sink on by default and configure it through its entry point."""
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", f"pk-lf-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-env")
    monkeypatch.setenv("LANGFUSE_HOST", receiver.url)
    settings = Settings(langfuse_sample_rate=0.25)
    assert "langfuse" in settings.resolved_sinks()
    sink = sink_class("langfuse").from_settings(settings)
    assert isinstance(sink, LangfuseSink)
    assert (sink.base_url, sink.sample_rate) == (receiver.url, 0.25)
    sink.shutdown()
