"""Many threads and many concurrent async invokes: exact counts, every event under its own parent."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.graphs import FANOUT, INPUT, build_graph
from vital_callbacks import (
    Event,
    GraphRun,
    InMemorySink,
    LLMCall,
    NodeRun,
    RetrieverCall,
    Settings,
    ToolCall,
    VitalCallbackHandler,
)

NODES_PER_RUN = 4 + FANOUT  # retrieve, plan, research x3, summarize, draft


def check_integrity(events: list[Event], runs: int, tenants: set[str]) -> None:
    kinds = Counter(type(e) for e in events)
    assert kinds == Counter({GraphRun: runs, NodeRun: runs * NODES_PER_RUN, LLMCall: runs * 2,
                             ToolCall: runs * FANOUT, RetrieverCall: runs})
    by_id = {e.run_id: e for e in events}
    assert len(by_id) == len(events)  # no duplicates
    for e in events:
        if isinstance(e, GraphRun):
            assert e.parent_run_id is None and e.trace_id == e.run_id
            continue
        parent = by_id[e.parent_run_id or ""]
        assert parent.trace_id == e.trace_id  # never under another invoke's parent
        assert parent.tenant_id == e.tenant_id
        if isinstance(e, (LLMCall, ToolCall, RetrieverCall)):
            assert isinstance(parent, NodeRun) and parent.node == e.node
    assert {e.tenant_id for e in events} == tenants
    for root in (e for e in events if isinstance(e, GraphRun)):
        assert root.llm_calls == 2


def test_sixteen_threads_fifty_invokes_each() -> None:
    """16 threads x 50 invokes through one handler: exact event counts and a consistent tree per run."""
    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    graph = build_graph()

    def worker(t: int) -> None:
        for _ in range(50):
            graph.invoke(INPUT, config={"callbacks": [handler], "metadata": {"tenant_id": f"t{t}"}})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, range(16)))
    assert handler.flush(60)
    check_integrity(sink.events, 800, {f"t{t}" for t in range(16)})
    assert handler.stats()["open_runs"] == 0
    handler.shutdown()


async def test_two_hundred_concurrent_ainvokes() -> None:
    """200 concurrent ainvokes: exact counts, no event under a wrong parent."""
    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(), sinks=[sink])
    graph = build_graph()
    await asyncio.gather(*(
        graph.ainvoke(INPUT, config={"callbacks": [handler], "metadata": {"tenant_id": f"t{i % 7}"}})
        for i in range(200)
    ))
    assert handler.flush(60)
    check_integrity(sink.events, 200, {f"t{i}" for i in range(7)})
    handler.shutdown()
