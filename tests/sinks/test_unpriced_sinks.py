"""Unpriced is never $0 in the sinks that carry a trace's total: Langfuse (the real SDK over HTTP to a
local receiver), OpenTelemetry (OTLP/HTTP to a local receiver) and the JSON log lines.

Three runs of the reference graph: the draft model unknown to every price list (the trace is partly
priced), both models unknown (nothing priced), and a plan call that fails before any usage (neither
priced nor unpriced). The expected numbers come from the events an in-memory sink received.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.graphs import INPUT, METADATA, build_graph
from tests.langfuse_receiver import LangfuseReceiver
from tests.otlp_receiver import OTLPReceiver
from tests.sinks.conftest import Lines
from tests.sinks.test_langfuse import make_sink
from tests.spend_workload import UNKNOWN_MODEL
from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler
from vital_callbacks.core.events import GraphRun, LLMCall
from vital_callbacks.sinks.logs import LogSink
from vital_callbacks.sinks.otel import OTelSink
from vital_callbacks.testing.fakes import ScriptedChatModel

SCENARIOS = ("partly_priced", "nothing_priced", "failed_without_usage")


def unknown(responses: str = "final answer") -> ScriptedChatModel:
    return ScriptedChatModel(model_name=UNKNOWN_MODEL, provider="vllm", responses=[responses])


def run(scenario: str, sink: Any) -> tuple[GraphRun, list[LLMCall]]:
    """One graph run of ``scenario`` into ``sink`` (and an in-memory sink); its graph run and LLM calls."""
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, shutdown_timeout_s=3), sinks=[memory, sink])
    if scenario == "partly_priced":
        graph_under_test = build_graph(draft_model=unknown())
    elif scenario == "nothing_priced":
        graph_under_test = build_graph(plan_model=unknown("a b c"), draft_model=unknown())
    else:
        graph_under_test = build_graph(plan_model=ScriptedChatModel(model_name="o3-mini", fail_with="upstream 503"))
    config = {"callbacks": [handler], "metadata": METADATA}
    try:
        graph_under_test.invoke(INPUT, config=config)
    except RuntimeError:
        assert scenario == "failed_without_usage"
    assert handler.flush(10)
    handler.shutdown()
    (graph,) = [e for e in memory.events if isinstance(e, GraphRun)]
    return graph, [e for e in memory.events if isinstance(e, LLMCall)]


def check_events(scenario: str, graph: GraphRun, calls: list[LLMCall]) -> None:
    """What each scenario is: the sinks' assertions below rest on it."""
    unpriced = [c for c in calls if c.cost is None and c.token_source != "none"]
    if scenario == "partly_priced":
        assert len(unpriced) == 1 and graph.cost_usd is not None and graph.cost_usd > 0
    elif scenario == "nothing_priced":
        assert len(unpriced) == 2 and graph.cost_usd is None
    else:
        assert [c.token_source for c in calls] == ["none"] and graph.cost_usd is None
    assert graph.unpriced_calls == len(unpriced)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_langfuse_trace_and_observations(scenario: str) -> None:
    """An unpriced generation has no cost_details (not 0) and says ``unpriced``; the trace's metadata holds
    the priced sum (absent when nothing was priced), the unpriced count and the lower-bound flag."""
    with LangfuseReceiver() as receiver:
        graph, calls = run(scenario, make_sink(receiver.url))
        spans = {s.metadata("run_id"): s for s in receiver.received()}
    check_events(scenario, graph, calls)
    for call in calls:
        span = spans[call.run_id]
        cost = span.json("langfuse.observation.cost_details")
        is_unpriced = call.cost is None and call.token_source != "none"
        assert span.metadata("unpriced") is is_unpriced
        if call.cost is None:
            assert cost is None, "a call without a price must not be sent with a cost"
        else:
            assert Decimal(str(cost["total"])) == pytest.approx(call.cost.total)
    root = spans[graph.run_id]
    assert (root.metadata("unpriced_calls"), root.metadata("cost_is_lower_bound")) == (graph.unpriced_calls,
                                                                                    graph.unpriced_calls > 0)
    assert (root.trace_metadata("vital_unpriced_calls"), root.trace_metadata("vital_cost_is_lower_bound")) == (
        graph.unpriced_calls, graph.unpriced_calls > 0)
    if graph.cost_usd is None:
        assert root.metadata("cost_usd") is None and root.trace_metadata("vital_cost_usd") is None
    else:
        assert Decimal(root.metadata("cost_usd")) == Decimal(root.trace_metadata("vital_cost_usd")) == graph.cost_usd


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_otel_span_attributes_over_otlp(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded off the wire: a chat span without a price has no ``vital.cost.usd`` and says
    ``vital.cost.unpriced``; the agent span has the priced sum (absent when nothing was priced), the
    unpriced count and ``vital.cost.is_lower_bound``."""
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        graph, calls = run(scenario, OTelSink(use_global=False))
        spans = {s.attributes["vital.run_id"]: s.attributes for s in receiver.spans()}
    check_events(scenario, graph, calls)
    for call in calls:
        attributes = spans[call.run_id]
        assert attributes["vital.cost.unpriced"] is (call.cost is None and call.token_source != "none")
        if call.cost is None:
            assert "vital.cost.usd" not in attributes
        else:
            assert attributes["vital.cost.usd"] == float(call.cost.total)
    root = spans[graph.run_id]
    assert (root["vital.unpriced_calls"], root["vital.cost.is_lower_bound"]) == (graph.unpriced_calls,
                                                                              graph.unpriced_calls > 0)
    if graph.cost_usd is None:
        assert "vital.cost.usd" not in root
    else:
        assert root["vital.cost.usd"] == pytest.approx(float(graph.cost_usd), rel=1e-12)




@pytest.mark.parametrize("scenario", SCENARIOS)
def test_log_lines(scenario: str, lines: Lines) -> None:
    """An LLM call's line says ``unpriced`` next to its null cost; a graph run's line has the priced sum as
    an exact string (null, never "0", when nothing was priced), ``unpriced_calls`` and
    ``cost_is_lower_bound``."""
    graph, calls = run(scenario, LogSink())
    check_events(scenario, graph, calls)
    by_run = {line["run_id"]: line for line in lines.parsed()}
    for call in calls:
        line = by_run[call.run_id]
        assert line["unpriced"] is (call.cost is None and call.token_source != "none")
        assert line["cost_usd"] == (None if call.cost is None else str(call.cost.total))
    root = by_run[graph.run_id]
    assert (root["unpriced_calls"], root["cost_is_lower_bound"]) == (graph.unpriced_calls, graph.unpriced_calls > 0)
    assert root["cost_usd"] == (None if graph.cost_usd is None else str(graph.cost_usd))
