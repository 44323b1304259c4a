"""The handler turns real LangGraph runs into the right tree of events."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from tests.graphs import FANOUT, INPUT, METADATA, build_graph
from vital_callbacks import (
    GraphRun,
    InMemorySink,
    LLMCall,
    NodeRun,
    RetrieverCall,
    Settings,
    ToolCall,
    VitalCallbackHandler,
    attribute,
)
from vital_callbacks.testing.fakes import ScriptedChatModel


def run_reference(handler: VitalCallbackHandler, sink: InMemorySink, **config: Any) -> dict[str, Any]:
    result = build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA, **config})
    assert handler.flush(10)
    return result  # type: ignore[no-any-return]


def test_reference_graph_tree(handler: VitalCallbackHandler, memory_sink: InMemorySink) -> None:
    """One graph run; a node run per executed node with the right step and parent; calls under their nodes."""
    run_reference(handler, memory_sink)
    graphs = memory_sink.of(GraphRun)
    nodes = memory_sink.of(NodeRun)
    assert len(graphs) == 1
    root = graphs[0]
    assert root.name == "research_agent" and root.parent_run_id is None and root.status == "success"

    by_name: dict[str, list[NodeRun]] = {}
    for n in nodes:
        by_name.setdefault(n.node or "", []).append(n)
    assert Counter({k: len(v) for k, v in by_name.items()}) == Counter(
        {"retrieve": 1, "plan": 1, "research": FANOUT, "summarize": 1, "draft": 1})
    assert [by_name[k][0].step for k in ("retrieve", "plan", "research", "summarize")] == [1, 2, 3, 4]
    for name in ("retrieve", "plan", "research", "summarize"):
        assert all(n.parent_run_id == root.run_id for n in by_name[name])
    # The subgraph's node hangs under the node that ran the subgraph, in a nested namespace.
    draft, summarize = by_name["draft"][0], by_name["summarize"][0]
    assert draft.parent_run_id == summarize.run_id
    assert draft.checkpoint_ns and summarize.checkpoint_ns
    assert draft.checkpoint_ns.startswith(summarize.checkpoint_ns.split(":")[0])
    assert "|" in draft.checkpoint_ns

    llm = {c.node: c for c in memory_sink.of(LLMCall)}
    assert llm["plan"].parent_run_id == by_name["plan"][0].run_id
    assert llm["draft"].parent_run_id == draft.run_id
    tools = memory_sink.of(ToolCall)
    assert len(tools) == FANOUT
    assert {t.parent_run_id for t in tools} == {n.run_id for n in by_name["research"]}
    (retriever,) = memory_sink.of(RetrieverCall)
    assert retriever.parent_run_id == by_name["retrieve"][0].run_id and retriever.documents == 2

    for event in memory_sink.events:
        assert event.trace_id == root.run_id
        assert (event.tenant_id, event.user_id, event.session_id) == ("acme", "u1", "s1")
        assert event.graph == "research_agent"
        assert event.end_time >= event.start_time


def test_graph_totals_sum_the_calls_under_it(handler: VitalCallbackHandler, memory_sink: InMemorySink) -> None:
    """A graph run's tokens and cost are the sums over every LLM call in it."""
    run_reference(handler, memory_sink)
    (root,) = memory_sink.of(GraphRun)
    calls = memory_sink.of(LLMCall)
    assert root.llm_calls == len(calls) == 2
    assert root.usage.input == sum(c.usage.input for c in calls) == 1600
    assert root.usage.cache_read == 1024 and root.usage.reasoning == 256
    assert root.cost_usd == sum((c.cost.total for c in calls if c.cost), Decimal(0))
    assert root.cost_usd is not None and root.cost_usd > 0


def test_attribution_precedence(memory_sink: InMemorySink, monkeypatch: pytest.MonkeyPatch) -> None:
    """Metadata beats an attribute() block, which beats VITAL_* env defaults; Langfuse keys are read."""
    monkeypatch.setenv("VITAL_TENANT_ID", "env-tenant")
    monkeypatch.setenv("VITAL_USER_ID", "env-user")
    handler = VitalCallbackHandler(Settings(), sinks=[memory_sink])
    model = ScriptedChatModel()
    model.invoke("a", config={"callbacks": [handler]})
    with attribute(tenant_id="ctx-tenant", session_id="ctx-session"):
        model.invoke("b", config={"callbacks": [handler]})
        model.invoke("c", config={"callbacks": [handler], "metadata": {
            "tenant_id": "md-tenant", "langfuse_user_id": "lf-user", "langfuse_session_id": "lf-session"}})
    handler.shutdown()
    a, b, c = sorted(memory_sink.of(LLMCall), key=lambda e: e.start_time)
    assert (a.tenant_id, a.user_id, a.session_id) == ("env-tenant", "env-user", None)
    assert (b.tenant_id, b.user_id, b.session_id) == ("ctx-tenant", "env-user", "ctx-session")
    assert (c.tenant_id, c.user_id, c.session_id) == ("md-tenant", "lf-user", "lf-session")


class _AskState(TypedDict, total=False):
    answer: str


def test_interrupt_and_resume_are_recorded_on_the_graph_run(
        handler: VitalCallbackHandler, memory_sink: InMemorySink) -> None:
    """A human-in-the-loop pause marks the graph run interrupted; the resumed run says it resumed."""

    def ask(state: _AskState) -> _AskState:
        return {"answer": str(interrupt("approve?"))}

    g = StateGraph(_AskState)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    g.add_edge("ask", END)
    graph = g.compile(checkpointer=InMemorySaver())
    config: Any = {"callbacks": [handler], "configurable": {"thread_id": "t1"}}
    first = graph.invoke({}, config=config)
    assert "__interrupt__" in first
    second = graph.invoke(Command(resume="yes"), config=config)
    assert second == {"answer": "yes"}
    handler.flush()
    paused, resumed = sorted(memory_sink.of(GraphRun), key=lambda e: e.start_time)
    assert paused.status == "interrupted" and paused.interrupts == 1 and not paused.resumed
    assert resumed.status == "success" and resumed.resumed
    statuses = [n.status for n in sorted(memory_sink.of(NodeRun), key=lambda e: e.start_time)]
    assert statuses == ["interrupted", "success"]


async def test_async_invoke_records_the_same_tree(handler: VitalCallbackHandler, memory_sink: InMemorySink) -> None:
    """ainvoke gives the same events as invoke, with the handler run inline (no executor hop)."""
    assert handler.run_inline
    await build_graph().ainvoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    handler.flush()
    assert len(memory_sink.of(GraphRun)) == 1
    assert len(memory_sink.of(NodeRun)) == 4 + FANOUT
    assert {c.node for c in memory_sink.of(LLMCall)} == {"plan", "draft"}


def test_errors_are_recorded_and_reraised_to_the_user(handler: VitalCallbackHandler,
                                                      memory_sink: InMemorySink) -> None:
    """A failing LLM call gives error rows for the call, its node and its graph; the user sees the error."""
    broken = ScriptedChatModel(fail_with="provider exploded")
    with pytest.raises(RuntimeError, match="provider exploded"):
        build_graph(plan_model=broken).invoke(INPUT, config={"callbacks": [handler]})
    handler.flush()
    (call,) = [c for c in memory_sink.of(LLMCall) if c.node == "plan"]
    assert call.status == "error" and call.error_type == "RuntimeError"
    assert call.error_message == "provider exploded" and call.cost is None
    (root,) = memory_sink.of(GraphRun)
    assert root.status == "error"
    assert [n.status for n in memory_sink.of(NodeRun) if n.node == "plan"] == ["error"]


def test_run_map_does_not_grow(memory_sink: InMemorySink) -> None:
    """100,000 runs started and ended (ends carry no metadata) leave nothing behind in the run map."""
    handler = VitalCallbackHandler(Settings(queue_size=400_000), sinks=[])  # two callbacks per run
    root = uuid.uuid4()
    handler.on_chain_start({}, {}, run_id=root, name="LangGraph")
    for i in range(100_000):
        rid = uuid.uuid4()
        handler.on_chain_start({}, {}, run_id=rid, parent_run_id=root, name="n",
                               metadata={"langgraph_node": "n", "langgraph_step": i,
                                         "langgraph_checkpoint_ns": f"n:{i}"})
        if i % 2:
            handler.on_chain_end({}, run_id=rid)
        else:
            handler.on_chain_error(ValueError("x"), run_id=rid)
    handler.on_chain_end({}, run_id=root)
    assert handler.flush(30)
    assert handler.stats()["open_runs"] == 0
    assert handler.stats()["submitted"] == 100_001
    handler.shutdown()


async def test_every_entry_point_of_a_graph_is_recorded(handler: VitalCallbackHandler,
                                                        memory_sink: InMemorySink) -> None:
    """invoke, stream, batch, ainvoke, astream and abatch each give one graph run per input."""
    graph = build_graph()
    config: Any = {"callbacks": [handler], "metadata": METADATA}
    graph.invoke(INPUT, config=config)
    list(graph.stream(INPUT, config=config))
    graph.batch([INPUT, INPUT], config=config)
    await graph.ainvoke(INPUT, config=config)
    [chunk async for chunk in graph.astream(INPUT, config=config)]
    await graph.abatch([INPUT, INPUT], config=config)
    handler.flush()
    roots = memory_sink.of(GraphRun)
    assert len(roots) == 8 and all(r.llm_calls == 2 and r.status == "success" for r in roots)
    assert len(memory_sink.of(LLMCall)) == 16


EXIT_SCRIPT = """
import sys
from tests.graphs import INPUT, build_graph
from vital_callbacks import Settings, VitalCallbackHandler
handler = VitalCallbackHandler(Settings(database_url=sys.argv[1], flush_interval_s=30, batch_size=10_000))
build_graph().invoke(INPUT, config={"callbacks": [handler]})
# no flush, no shutdown: the interpreter's exit must deliver what is queued
"""


def test_queued_events_are_delivered_at_interpreter_exit(tmp_path: Any) -> None:
    """A process that exits without flush() still stores its events (bounded by the shutdown timeout)."""
    import subprocess
    import sys
    from pathlib import Path

    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'exit.db'}"
    subprocess.run([sys.executable, "-c", EXIT_SCRIPT, url], check=True, timeout=120,
                   cwd=Path(__file__).parent.parent)
    with create_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM llm_calls")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM graph_runs")).scalar_one() == 1


def test_a_model_given_the_handler_at_construction_inside_a_node_keeps_the_request_attribution(
        memory_sink: InMemorySink) -> None:
    """The handler sees the model call only, whose LangChain parent (the node) is another handler's
    run: the call is a trace of its own with the attribution, trace id and node of the caller's
    context, as if it had no parent."""

    class S(TypedDict, total=False):
        answer: str

    handler = VitalCallbackHandler(Settings(), sinks=[memory_sink])
    model = ScriptedChatModel(callbacks=[handler])

    def agent(state: S) -> S:
        return {"answer": str(model.invoke("hi").content)}

    g = StateGraph(S)
    g.add_node("agent", agent)
    g.add_edge(START, "agent")
    g.add_edge("agent", END)
    graph = g.compile()
    with attribute(tenant_id="acme", user_id="u1"):
        graph.invoke({}, config={"callbacks": [VitalCallbackHandler(Settings(), sinks=[InMemorySink()])]})
        # LangGraph runs the node in a copy of the context: the trace id is seen where the hook ran
        run_id = uuid.uuid4()
        handler.on_chat_model_start({}, [[]], run_id=run_id, parent_run_id=uuid.uuid4())
        assert handler.last_trace_id == str(run_id)
    handler.shutdown()
    (call,) = memory_sink.of(LLMCall)
    assert (call.tenant_id, call.user_id, call.node) == ("acme", "u1", "agent")
    assert call.trace_id == call.run_id and call.parent_run_id is None
    assert not memory_sink.of(GraphRun)


def test_run_ids_are_the_uuids_text(handler: VitalCallbackHandler, memory_sink: InMemorySink) -> None:
    """What LangChain's UUIDs become in events and rows: their canonical text, as ``str`` writes it."""
    root, tool_run = uuid.uuid4(), uuid.UUID("00000000-0000-4000-8000-00000000000a")
    handler.on_chain_start({}, {}, run_id=root, name="graph")
    handler.on_tool_start({}, "2 + 2", run_id=tool_run, parent_run_id=root, name="calculator")
    handler.on_tool_end("4", run_id=tool_run)
    handler.on_chain_end({}, run_id=root)
    assert handler.flush()
    (tool,) = memory_sink.of(ToolCall)
    (graph,) = memory_sink.of(GraphRun)
    assert (tool.run_id, tool.parent_run_id, tool.trace_id) == (str(tool_run), str(root), str(root))
    assert tool.run_id == "00000000-0000-4000-8000-00000000000a" and graph.run_id == str(root)
