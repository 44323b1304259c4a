"""The trace users expect (issue 19, in part): their own request's trace id, race-free; sane values only;
a handler given to a model at construction knows its node."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from vital_callbacks import InMemorySink, LLMCall, Score, Settings, VitalCallbackHandler, capture_traces
from vital_callbacks.core.events import GraphRun
from vital_callbacks.testing.fakes import ScriptedChatModel


class State(TypedDict, total=False):
    text: str


def slow_graph(model: Any) -> Any:
    async def ask(state: State) -> State:
        await asyncio.sleep(0.01)
        return {"text": str((await model.ainvoke(state["text"])).content)}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile()


def test_ten_concurrent_requests_each_score_their_own_trace(memory_sink: InMemorySink) -> None:
    """One shared handler, 10 concurrent ``ainvoke``s, each scoring its own request from inside a
    ``capture_traces`` block: 10 of 10 scores land on the trace of their own tenant."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    graph = slow_graph(ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"]))

    async def request(n: int) -> None:
        config: RunnableConfig = {"callbacks": [handler], "metadata": {"tenant_id": f"tenant-{n}"}}
        with capture_traces() as traces:
            await graph.ainvoke({"text": f"question {n}"}, config=config)
        assert traces.trace_id is not None
        handler.score(traces.trace_id, "helpfulness", n / 10)

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(10)))

    asyncio.run(main())
    assert handler.flush()
    roots = {e.trace_id: e.tenant_id for e in memory_sink.of(GraphRun)}
    scores = memory_sink.of(Score)
    assert len(scores) == 10
    right = [s for s in scores if roots.get(s.trace_id) == f"tenant-{round(s.value * 10)}"]  # type: ignore[operator]
    assert len(right) == 10
    handler.shutdown()


def test_your_own_run_id_becomes_the_trace_id(memory_sink: InMemorySink) -> None:
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    graph = slow_graph(ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"]))
    mine = uuid.uuid4()
    asyncio.run(graph.ainvoke({"text": "hi"}, config={"callbacks": [handler], "run_id": mine}))
    handler.score(str(mine), "thumbs_up", True)
    assert handler.flush()
    [root] = memory_sink.of(GraphRun)
    [score] = memory_sink.of(Score)
    assert root.trace_id == str(mine) and score.trace_id == str(mine) and score.matched
    handler.shutdown()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_scores_that_are_not_finite_numbers_are_refused(handler: VitalCallbackHandler, value: float) -> None:
    with pytest.raises(ValueError, match="finite number"):
        handler.score("some-run", "accuracy", value)


@pytest.mark.parametrize("tenant", [{"id": 1}, ["a"], object()], ids=["dict", "list", "object"])
def test_an_id_that_is_not_a_scalar_is_stored_as_none_with_one_warning(
        memory_sink: InMemorySink, caplog: pytest.LogCaptureFixture, tenant: object) -> None:
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    model = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"])
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        for _ in range(3):
            model.invoke("hi", config={"callbacks": [handler], "metadata": {"tenant_id": tenant, "user_id": "u"}})
    assert handler.flush()
    calls = memory_sink.of(LLMCall)
    assert [c.tenant_id for c in calls] == [None, None, None] and all(c.user_id == "u" for c in calls)
    assert len([r for r in caplog.records if "not an id" in r.getMessage()]) <= 1  # once per type, per process
    handler.shutdown()


def test_a_handler_given_to_a_model_at_construction_knows_its_node(memory_sink: InMemorySink) -> None:
    """``ChatX(callbacks=[handler])`` inside a node: no graph run is seen, but the call records the node
    from LangGraph's metadata, and not the model's class as its graph."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    model = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"], callbacks=[handler])

    def ask(state: State) -> State:
        return {"text": str(model.invoke(state["text"]).content)}

    graph = StateGraph(State)
    graph.add_node("summarize", ask)
    graph.add_edge(START, "summarize")
    graph.add_edge("summarize", END)
    graph.compile().invoke({"text": "hi"})
    assert handler.flush()
    [call] = memory_sink.of(LLMCall)
    assert call.node == "summarize" and call.graph is None
    handler.shutdown()


def test_a_tool_owns_the_calls_made_inside_it(memory_sink: InMemorySink) -> None:
    """A ``ToolNode`` tool that calls a model and a retriever: both are children of the tool's row (not
    of the node), the call names its tool, and the tool's row carries the call's tokens and cost."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.messages import ToolCall as ToolCallRequest
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.tools import tool
    from langgraph.graph import MessagesState
    from langgraph.prebuilt import ToolNode

    from vital_callbacks.core.events import RetrieverCall, ToolCall
    from vital_callbacks.testing.fakes import StaticRetriever

    usage = UsageMetadata(input_tokens=1000, output_tokens=200, total_tokens=1200)
    summarizer = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["short"], usage=usage)
    docs = StaticRetriever(documents=["d1", "d2"], k=2)

    @tool
    def research(topic: str) -> str:
        """Research a topic: retrieve, then summarize with a model."""
        found = docs.invoke(topic)
        return str(summarizer.invoke(" ".join(d.page_content for d in found)).content)

    def agent(state: MessagesState) -> dict[str, Any]:
        request = ToolCallRequest(name="research", args={"topic": "costs"}, id="call-1")
        return {"messages": [AIMessage("", tool_calls=[request])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([research]))
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "tools")
    graph.add_edge("tools", END)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    config: RunnableConfig = {"callbacks": [handler]}
    graph.compile().invoke({"messages": [HumanMessage("go")]}, config=config)
    assert handler.flush()
    [tool_row] = memory_sink.of(ToolCall)
    [call] = memory_sink.of(LLMCall)
    [retrieval] = memory_sink.of(RetrieverCall)
    assert call.parent_run_id == tool_row.run_id and retrieval.parent_run_id == tool_row.run_id
    assert call.tool == "research" and call.node == "tools"
    assert tool_row.llm_calls == 1 and tool_row.usage.input == 1000 and tool_row.usage.output == 200
    assert call.cost is not None and tool_row.cost_usd == call.cost.total
    [root] = memory_sink.of(GraphRun)
    assert root.llm_calls == 1 and root.cost_usd == call.cost.total  # the run's totals still include it
    handler.shutdown()


def test_costs_by_tool_in_the_analytics_and_the_report(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """LLM calls made inside a tool are grouped under it (``by=tool``); calls outside any tool have none."""
    from vital_callbacks.analytics import cost_report, reader_engine
    from vital_callbacks.cli import main
    from vital_callbacks.core.events import TokenUsage
    from vital_callbacks.store import migrate

    url = f"sqlite:///{tmp_path / 'tools.db'}"
    migrate.upgrade(url)
    handler = VitalCallbackHandler(Settings(database_url=url, sinks=["sql"], flush_interval_s=0.05))
    for n, tool_name in enumerate(["research", "research", None]):
        handler.runtime.submit(LLMCall(run_id=f"r{n}", parent_run_id=None, trace_id=f"t{n}", provider="openai",
                                       model="gpt-4o-mini", tool=tool_name, start_time=1.7e9, end_time=1.7e9 + 1,
                                       usage=TokenUsage(100, 10, 110)))
    assert handler.flush()
    handler.shutdown()
    engine = reader_engine(url)
    rows = {r.key: r.calls for r in cost_report(engine, by="tool")}
    engine.dispose()
    assert rows.get("research") == 2 and sum(rows.values()) == 3
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    assert main(["report", "--by", "tool"]) == 0
    assert "research" in capsys.readouterr().out


def test_a_cancelled_request_is_cancelled_not_an_error(memory_sink: InMemorySink) -> None:
    """A client that goes away (the task running ``ainvoke`` cancelled): the graph run and the node in
    progress are ``cancelled``, which the error counts leave out."""
    from vital_callbacks.core.events import NodeRun

    async def slow(state: State) -> State:
        await asyncio.sleep(5)
        return {"text": "late"}

    graph = StateGraph(State)
    graph.add_node("slow", slow)
    graph.add_edge(START, "slow")
    graph.add_edge("slow", END)
    compiled = graph.compile()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])

    async def main() -> None:
        task = asyncio.create_task(compiled.ainvoke({"text": "hi"}, config={"callbacks": [handler]}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert handler.flush()
    [root] = memory_sink.of(GraphRun)
    [node] = memory_sink.of(NodeRun)
    assert (root.status, node.status) == ("cancelled", "cancelled")
    assert root.error_type == "CancelledError" and root.error_message is None
    handler.shutdown()


def test_each_row_keeps_its_own_tags(memory_sink: InMemorySink) -> None:
    """Per-run tags (``with_config(tags=[...])``) are on that run's row, beside the inherited ones; the
    framework's own bookkeeping tags (``seq:step:N``, ``graph:step:N``) are not."""
    model = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"])
    tagged = model.with_config(tags=["summarizer"])

    def ask(state: State) -> State:
        return {"text": str(tagged.invoke(state["text"]).content)}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    graph.compile().invoke({"text": "hi"}, config={"callbacks": [handler], "tags": ["request"]})
    assert handler.flush()
    [root] = memory_sink.of(GraphRun)
    [call] = memory_sink.of(LLMCall)
    assert root.tags == ("request",)
    assert set(call.tags) == {"request", "summarizer"}
    handler.shutdown()


def test_the_applications_metadata_and_thread_id_are_kept_redacted(tmp_path: Any) -> None:
    """``feature`` / ``experiment`` / ``release`` are stored as JSON on every row of the run (an e-mail in
    a value redacted; LangChain's and LangGraph's own keys left out), and ``thread_id`` beside a session."""
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    handler = VitalCallbackHandler(Settings(database_url=url, sinks=["sql"], flush_interval_s=0.05))
    graph = slow_graph(ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"]))
    config: RunnableConfig = {"callbacks": [handler], "configurable": {"thread_id": "conv-7"},
                              "metadata": {"feature": "search", "experiment": "b", "release": 42,
                                           "owner": "ann@example.com", "session_id": "s1"}}
    asyncio.run(graph.ainvoke({"text": "hi"}, config=config))
    assert handler.flush()
    handler.shutdown()
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT metadata, thread_id, session_id FROM llm_calls UNION ALL "
                                 "SELECT metadata, thread_id, session_id FROM graph_runs")).all()
    engine.dispose()
    assert len(rows) == 2
    import json

    for raw, thread, session in rows:
        stored = json.loads(raw)
        assert {k: stored[k] for k in ("feature", "experiment", "release")} == {"feature": "search",
                                                                                 "experiment": "b", "release": 42}
        assert "ann@example.com" not in raw and "session_id" not in stored
        assert not any(k.startswith(("langgraph_", "ls_")) for k in stored)
        assert (thread, session) == ("conv-7", "s1")


def test_metadata_keys_can_be_limited_or_turned_off(memory_sink: InMemorySink) -> None:
    model = ScriptedChatModel(model_name="gpt-4o-mini", provider="openai", responses=["ok"])
    config: RunnableConfig = {"metadata": {"feature": "search", "secret_plan": "x"}}
    for keys, expected in ((["feature"], '{"feature": "search"}'), (["-"], None)):
        handler = VitalCallbackHandler(Settings(metadata_keys=keys), sinks=[InMemorySink()])
        model.invoke("hi", config={**config, "callbacks": [handler]})
        assert handler.flush()
        sink = handler.runtime.sinks[0]
        assert isinstance(sink, InMemorySink)
        [call] = sink.of(LLMCall)
        assert call.metadata == expected
        handler.shutdown()
