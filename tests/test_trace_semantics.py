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
