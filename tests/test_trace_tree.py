"""The trace users expect (issue 19, continued): fallbacks at the root are one trace, a subgraph's nodes
are known by where they run, a run's totals include calls that outlived it, ``last_trace_id`` is per
context, and a stream keeps the tenant of the block it was created in (FastAPI streaming)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from vital_callbacks import InMemorySink, LLMCall, NodeRun, Settings, VitalCallbackHandler, attribute
from vital_callbacks.core import attribution
from vital_callbacks.core.events import GraphRun
from vital_callbacks.testing.fakes import ScriptedChatModel


class State(TypedDict, total=False):
    text: str


def model(name: str = "gpt-4o-mini", **kwargs: Any) -> ScriptedChatModel:
    return ScriptedChatModel(model_name=name, provider="openai", responses=["ok"], **kwargs)


def one_node_graph(node: str, fn: Callable[..., Any], name: str | None = None) -> Any:
    graph = StateGraph(State)
    graph.add_node(node, fn)
    graph.add_edge(START, node)
    graph.add_edge(node, END)
    return graph.compile(name=name) if name else graph.compile()


def asking(chat: ScriptedChatModel) -> Callable[..., State]:
    def ask(state: State, config: RunnableConfig) -> State:
        return {"text": str(chat.invoke(state.get("text", "hi"), config).content)}

    return ask


# -- fallbacks at the root ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fallbacks_at_the_root_are_one_trace(memory_sink: InMemorySink, mode: str) -> None:
    """``graph.with_fallbacks([backup])`` at the root, the first graph failing: one trace, one graph run
    (named after the graph, a success) whose totals include both attempts' calls; the failed attempt
    is an error under it, not a failed request of its own."""
    failing = one_node_graph("agent", asking(model(fail_with="rate limited")), name="support_bot")
    backup = one_node_graph("agent", asking(model("gpt-4o")), name="support_bot_backup")
    chain = failing.with_fallbacks([backup])
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    config: RunnableConfig = {"callbacks": [handler], "metadata": {"tenant_id": "acme"}}
    if mode == "sync":
        chain.invoke({"text": "hi"}, config=config)
    else:
        asyncio.run(chain.ainvoke({"text": "hi"}, config=config))
    assert handler.flush()
    [root] = memory_sink.of(GraphRun)
    events = memory_sink.events
    assert {e.trace_id for e in events} == {root.trace_id}
    assert (root.graph, root.status, root.tenant_id) == ("support_bot", "success", "acme")
    calls = sorted(memory_sink.of(LLMCall), key=lambda c: c.start_time)
    assert [(c.model, c.status) for c in calls] == [("gpt-4o-mini", "error"), ("gpt-4o", "success")]
    assert root.llm_calls == 2 and calls[1].cost is not None and root.cost_usd == calls[1].cost.total
    nodes = memory_sink.of(NodeRun)
    assert sorted(n.status for n in nodes) == ["error", "success"]
    assert all(n.parent_run_id == root.run_id for n in nodes)
    assert all(e.tenant_id == "acme" for e in events)
    handler.shutdown()


def test_model_fallbacks_at_the_root_are_one_trace(memory_sink: InMemorySink) -> None:
    """``model.with_fallbacks([other])`` called alone: both calls under one root."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    model(fail_with="overloaded").with_fallbacks([model("gpt-4o")]).invoke("hi", config={"callbacks": [handler]})
    assert handler.flush()
    [root] = memory_sink.of(GraphRun)
    calls = memory_sink.of(LLMCall)
    assert len(calls) == 2 and {c.parent_run_id for c in calls} == {root.run_id}
    assert root.status == "success" and root.llm_calls == 2 and root.graph == "ScriptedChatModel"
    handler.shutdown()


# -- subgraphs and node identity ------------------------------------------------------------------
def two_level_graph() -> Any:
    """``app``: a node ``work`` of its own, and a subgraph ``researcher`` (run as node ``research``)
    whose node is also called ``work``; each calls a model."""
    inner = one_node_graph("work", asking(model("gpt-4o")), name="researcher")
    outer = StateGraph(State)
    outer.add_node("research", inner)
    outer.add_node("work", asking(model("gpt-4o-mini")))
    outer.add_edge(START, "research")
    outer.add_edge("research", "work")
    outer.add_edge("work", END)
    return outer.compile(name="app")


def test_a_subgraphs_nodes_carry_its_name(memory_sink: InMemorySink) -> None:
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    two_level_graph().invoke({"text": "hi"}, config={"callbacks": [handler]})
    assert handler.flush()
    nodes = {(n.graph, n.subgraph, n.node) for n in memory_sink.of(NodeRun)}
    assert nodes == {("app", None, "research"), ("app", "researcher", "work"), ("app", None, "work")}
    calls = {(c.model, c.subgraph, c.node) for c in memory_sink.of(LLMCall)}
    assert calls == {("gpt-4o", "researcher", "work"), ("gpt-4o-mini", None, "work")}
    handler.shutdown()


def test_nodes_of_two_graphs_and_of_a_subgraph_stay_apart_in_reports(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Two graphs with an ``agent`` node each, and a subgraph's ``work`` beside its parent's ``work``:
    ``report --by node``, ``cost_by_rows(by="node")`` and ``/analytics/costs?by=node`` keep all apart."""
    from fastapi.testclient import TestClient

    from vital_callbacks.analytics import cost_by_rows, reader_engine
    from vital_callbacks.cli import main
    from vital_callbacks.server import create_app

    url = f"sqlite:///{tmp_path / 'nodes.db'}"
    handler = VitalCallbackHandler(Settings(database_url=url, sinks=["sql"], flush_interval_s=0.05))
    config: RunnableConfig = {"callbacks": [handler]}
    two_level_graph().invoke({"text": "hi"}, config=config)
    for name in ("billing_bot", "support_bot"):
        one_node_graph("agent", asking(model()), name=name).invoke({"text": "hi"}, config=config)
    assert handler.flush()
    handler.shutdown()
    engine = reader_engine(url)
    keys = {g.key or "": g.calls for g in cost_by_rows(engine, "node")}
    assert keys == {"app/work": 1, "app/researcher/work": 1, "billing_bot/agent": 1, "support_bot/agent": 1}
    with TestClient(create_app(engine, tokens="*:admin")) as client:
        body = client.get("/analytics/costs", params={"by": "node", "hours": 1},
                          headers={"Authorization": "Bearer admin"}).json()
    assert {g["key"]: g["calls"] for g in body["groups"]} == keys
    engine.dispose()
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    assert main(["report", "--by", "node"]) == 0
    out = capsys.readouterr().out
    assert all(key in out for key in keys)


# -- calls that outlive their run -----------------------------------------------------------------
def test_a_cancelled_runs_totals_include_the_calls_that_end_after_it(memory_sink: InMemorySink) -> None:
    """The request is cancelled while a model call runs in a worker thread (``asyncio.to_thread``,
    which cannot be stopped): the call ends later, and the graph run (``cancelled``) still counts it."""
    slow = model(latency_s=0.6)

    async def ask(state: State, config: RunnableConfig) -> State:
        reply = await asyncio.to_thread(slow.invoke, state["text"], config)
        return {"text": str(reply.content)}

    graph = one_node_graph("ask", ask, name="chat")
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])

    async def request() -> None:
        task = asyncio.create_task(graph.ainvoke({"text": "hi"}, config={"callbacks": [handler]}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(request())
    deadline = time.monotonic() + 10
    while not memory_sink.of(GraphRun) and time.monotonic() < deadline:
        time.sleep(0.05)  # the graph run is held until its call ends (or a flush)
    [root] = memory_sink.of(GraphRun)
    [call] = memory_sink.of(LLMCall)
    assert root.status == "cancelled" and call.status == "success" and call.end_time > root.end_time
    assert root.llm_calls == 1 and call.cost is not None and root.cost_usd == call.cost.total
    assert handler.flush()
    handler.shutdown()


def test_a_flush_delivers_a_run_still_waiting_for_its_calls(memory_sink: InMemorySink) -> None:
    """A flush does not wait for calls still running: the graph run is delivered as it is, then the
    late call on its own row; nothing is lost or counted twice."""
    slow = model(latency_s=1.0)
    started = threading.Event()

    def ask(state: State, config: RunnableConfig) -> State:
        started.set()
        raise RuntimeError("the other branch failed")

    def in_thread(state: State, config: RunnableConfig) -> State:
        return {"text": str(slow.invoke("hi", config).content)}

    graph = StateGraph(State)
    graph.add_node("fails", ask)
    graph.add_node("slow", in_thread)
    graph.add_edge(START, "fails")
    graph.add_edge(START, "slow")
    graph.add_edge("fails", END)
    graph.add_edge("slow", END)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    with pytest.raises(RuntimeError):
        graph.compile().invoke({"text": "hi"}, config={"callbacks": [handler]})
    assert handler.flush(timeout=5)
    [root] = memory_sink.of(GraphRun)
    assert root.status == "error"
    deadline = time.monotonic() + 10
    while not memory_sink.of(LLMCall) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handler.flush()
    assert len(memory_sink.of(LLMCall)) == 1 and len(memory_sink.of(GraphRun)) == 1
    assert handler.stats()["dropped"] == {}
    handler.shutdown()


# -- last_trace_id per context --------------------------------------------------------------------
def test_last_trace_id_is_this_requests_with_one_shared_handler(memory_sink: InMemorySink) -> None:
    """10 concurrent ``ainvoke``s and 4 threads on one handler: each reads its own trace id."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])

    async def slow_ask(state: State) -> State:
        await asyncio.sleep(0.02)
        return state

    graph = one_node_graph("ask", slow_ask)
    seen: dict[str, str | None] = {}

    async def request(n: int) -> None:
        await graph.ainvoke({"text": "hi"}, config={"callbacks": [handler], "metadata": {"tenant_id": f"a{n}"}})
        seen[f"a{n}"] = handler.last_trace_id

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(10)))

    asyncio.run(main())

    def slow_ask_sync(state: State) -> State:
        time.sleep(0.02)
        return state

    sync_graph = one_node_graph("ask", slow_ask_sync)

    def in_thread(n: int) -> None:
        sync_graph.invoke({"text": "hi"}, config={"callbacks": [handler], "metadata": {"tenant_id": f"t{n}"}})
        seen[f"t{n}"] = handler.last_trace_id

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handler.flush()
    tenant_of = {e.trace_id: e.tenant_id for e in memory_sink.of(GraphRun)}
    assert len(seen) == 14 and all(tenant_of.get(trace or "") == tenant for tenant, trace in seen.items())
    assert VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink]).last_trace_id is None
    handler.shutdown()


# -- attribution where a stream is created --------------------------------------------------------
def test_a_task_created_inside_the_block_keeps_its_tenant(memory_sink: InMemorySink) -> None:
    """``asyncio.create_task`` copies the context: a task created inside ``attribute()`` and awaited after
    it is the block's tenant's; the same for a shared handler built outside any block."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    graph = one_node_graph("ask", asking(model()), name="chat")

    async def main() -> None:
        with attribute(tenant_id="acme"):
            task = asyncio.create_task(graph.ainvoke({"text": "hi"}, config={"callbacks": [handler]}))
        await asyncio.sleep(0)
        await task

    asyncio.run(main())
    assert handler.flush()
    assert {e.tenant_id for e in memory_sink.events} == {"acme"}
    handler.shutdown()


def test_a_stream_keeps_the_tenant_it_was_created_with(memory_sink: InMemorySink, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI ``StreamingResponse`` (TestClient): the graph's stream is read after the endpoint returned.
    A tenant given with the stream (the request's handler, or the config's metadata) is kept; one in an
    ``attribute()`` block the stream was created in cannot reach it (a stream runs where it is read),
    and a handler built in that block says so, once."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from fastapi.testclient import TestClient

    graph = one_node_graph("ask", asking(model()), name="chat")
    shared = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    app = FastAPI()

    async def chunks(stream: Any) -> Any:
        async for chunk in stream:
            yield f"{chunk}\n"

    @app.get("/per-request/{tenant}")
    async def per_request(tenant: str) -> StreamingResponse:
        handler = VitalCallbackHandler(runtime=shared.runtime, tenant_id=tenant)
        stream = graph.astream({"text": "hi"}, config={"callbacks": [handler]})
        return StreamingResponse(chunks(stream), media_type="text/plain")

    @app.get("/in-block/{tenant}")
    async def in_block(tenant: str) -> StreamingResponse:
        with attribute(tenant_id=tenant):  # left before the stream is read: the tenant cannot reach it
            handler = VitalCallbackHandler(runtime=shared.runtime)
            stream = graph.astream({"text": "hi"}, config={"callbacks": [handler]})
        return StreamingResponse(chunks(stream), media_type="text/plain")

    @app.get("/shared/{tenant}")
    async def with_metadata(tenant: str) -> StreamingResponse:
        stream = graph.astream({"text": "hi"}, config={"callbacks": [shared], "metadata": {"tenant_id": tenant}})
        return StreamingResponse(chunks(stream), media_type="text/plain")

    monkeypatch.setattr(attribution, "_warned_outside", False)
    with TestClient(app) as client, caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        for path in ("/per-request/acme", "/shared/globex"):
            response = client.get(path)
            assert response.status_code == 200 and "ask" in response.text
        assert not caplog.records
        assert client.get("/in-block/initech").status_code == 200
    assert shared.flush()
    assert sorted(e.tenant_id or "" for e in memory_sink.of(GraphRun)) == ["", "acme", "globex"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "outside the attribute() block" in warning and "'initech'" in warning
    shared.shutdown()


# -- found by reading the change ------------------------------------------------------------------
def late_request(handler: VitalCallbackHandler, latency_s: float = 0.6, metadata: dict[str, Any] | None = None,
                 in_thread: bool = True) -> None:
    """A request cancelled after 0.2 s while its model call runs (in a worker thread, or awaited)."""
    slow = model(latency_s=latency_s)

    async def ask(state: State, config: RunnableConfig) -> State:
        if in_thread:
            reply = await asyncio.to_thread(slow.invoke, state["text"], config)
        else:  # started on the loop's thread (the fake's blocking sleep runs in LangChain's executor)
            reply = await slow.ainvoke(state["text"], config)
        return {"text": str(reply.content)}

    graph = one_node_graph("ask", ask, name="chat")

    async def request() -> None:
        config: RunnableConfig = {"callbacks": [handler], "metadata": metadata or {}}
        task = asyncio.create_task(graph.ainvoke({"text": "hi"}, config=config))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(request())


def test_a_cancelled_await_does_not_hold_its_run(memory_sink: InMemorySink) -> None:
    """A call awaited on the request's own thread is cancelled with it (LangChain sends it no end): the
    graph run waits for nothing and is delivered at once."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    late_request(handler, latency_s=0.6, in_thread=False)
    deadline = time.monotonic() + 3
    while not memory_sink.of(GraphRun) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.status for r in memory_sink.of(GraphRun)] == ["cancelled"]
    assert handler.stats()["held_for_late_calls"] == 0
    handler.shutdown()


def exploding(text: str) -> str:
    """A redaction hook that fails on one value (VITAL_REDACTION_HOOK)."""
    if text == "explode":
        raise RuntimeError("redaction failed")
    return text


def test_a_held_run_whose_processing_failed_is_delivered_once(memory_sink: InMemorySink) -> None:
    """A processor failing over a graph run that waits for late calls: passed on as captured, once,
    and never also released later."""
    settings = Settings(flush_interval_s=0.05, redaction_hook=f"{__name__}:exploding")
    handler = VitalCallbackHandler(settings, sinks=[memory_sink])
    late_request(handler, metadata={"feature": "explode"})
    time.sleep(1.0)
    assert handler.flush()
    assert len(memory_sink.of(GraphRun)) == 1 and handler.stats()["held_for_late_calls"] == 0
    stats = handler.stats()
    assert stats["exported"]["memory"] == stats["submitted"]
    handler.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_deliver_its_parents_held_run(memory_sink: InMemorySink) -> None:
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    worker = threading.Thread(target=late_request, args=(handler, 1.5))
    worker.start()
    deadline = time.monotonic() + 5
    while not handler.stats()["held_for_late_calls"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handler.stats()["held_for_late_calls"] == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its flush must deliver nothing of the parent's
        ok = handler.flush(3)
        os.write(write, f"{int(ok)} {len(memory_sink.of(GraphRun))}".encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    worker.join()
    assert child == "1 0"  # its flush succeeded and delivered nothing of the parent's
    deadline = time.monotonic() + 5
    while not memory_sink.of(GraphRun) and time.monotonic() < deadline:
        time.sleep(0.05)
    [root] = memory_sink.of(GraphRun)
    assert root.llm_calls == 1  # the parent's, with its late call
    handler.shutdown()


def test_last_trace_id_is_per_handler_and_never_another_requests(memory_sink: InMemorySink) -> None:
    """Two handlers in one context each keep their own; a new handler reads None until its own run,
    even one built where a finished handler was."""
    graph = one_node_graph("ask", asking(model()))
    first = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    second = VitalCallbackHandler(runtime=first.runtime)
    graph.invoke({"text": "hi"}, config={"callbacks": [first]})
    graph.invoke({"text": "hi"}, config={"callbacks": [second]})
    assert first.last_trace_id and second.last_trace_id and first.last_trace_id != second.last_trace_id
    for _ in range(5):
        fresh = VitalCallbackHandler(runtime=first.runtime)
        assert fresh.last_trace_id is None
        graph.invoke({"text": "hi"}, config={"callbacks": [fresh]})
        assert fresh.last_trace_id is not None
        del fresh
    first.shutdown()


def test_subgraphs_with_the_default_name_are_known_by_their_node(memory_sink: InMemorySink) -> None:
    """Neither graph named (LangGraph's default "LangGraph"): the subgraph is the node it runs as."""
    inner = one_node_graph("work", asking(model()))
    outer = StateGraph(State)
    outer.add_node("research", inner)
    outer.add_node("work", asking(model()))
    outer.add_edge(START, "research")
    outer.add_edge("research", "work")
    outer.add_edge("work", END)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    outer.compile().invoke({"text": "hi"}, config={"callbacks": [handler]})
    assert handler.flush()
    nodes = {(n.subgraph, n.node) for n in memory_sink.of(NodeRun)}
    assert nodes == {(None, "research"), ("research", "work"), (None, "work")}
    handler.shutdown()
