"""The pipeline never blocks or breaks the caller, retries, and accounts for every event."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from tests.graphs import INPUT, build_graph
from vital_callbacks import Event, ExportResult, InMemorySink, LLMCall, Settings, Sink, VitalCallbackHandler
from vital_callbacks.runtime.pipeline import Pipeline


class RaisingSink(Sink):
    name = "raising"

    def export(self, batch: Sequence[Event]) -> ExportResult:
        raise ConnectionError("sink is down")


class FlakySink(InMemorySink):
    """Fails the first ``failures`` exports, then works."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def export(self, batch: Sequence[Event]) -> ExportResult:
        self.attempts += 1
        if self.attempts <= self.failures:
            return ExportResult.FAILURE
        return super().export(batch)


class HangingSink(Sink):
    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        self.release.wait(120)
        return ExportResult.SUCCESS


FAST = Settings(flush_interval_s=0.02, max_retries=2, retry_backoff_s=0.01)


def test_a_raising_sink_leaves_the_workflow_and_other_sinks_alone() -> None:
    """A sink that raises: same workflow result, other sinks get everything, the loss is counted."""
    good = InMemorySink()
    handler = VitalCallbackHandler(FAST, sinks=[RaisingSink(), good])
    expected = build_graph().invoke(INPUT)
    assert build_graph().invoke(INPUT, config={"callbacks": [handler]}) == expected
    assert handler.flush(10) is False  # not everything was delivered, and flush says so
    stats = handler.stats()
    total = len(good.events)
    assert total == stats["submitted"] > 0
    assert stats["dropped"] == {"raising": total}
    assert stats["failed_exports"]["raising"] >= 3  # first try + 2 retries
    handler.shutdown()


def test_retries_deliver_after_transient_failures() -> None:
    """Transient export failures are retried with backoff until delivered; nothing is lost."""
    flaky = FlakySink(failures=2)
    handler = VitalCallbackHandler(FAST, sinks=[flaky])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(10) is True
    assert handler.stats()["dropped"] == {}
    assert len(flaky.events) == handler.stats()["submitted"]
    handler.shutdown()


def test_a_hanging_sink_never_blocks_the_caller_and_shutdown_is_bounded() -> None:
    """The workflow finishes while the sink hangs; flush and shutdown give up at their timeouts."""
    hanging = HangingSink()
    handler = VitalCallbackHandler(FAST, sinks=[hanging])
    for _ in range(3):
        build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush(timeout=0.2) is False
    # The events in the hung export are still undelivered, and the reported depth says so.
    stats = handler.pipeline.stats()
    assert stats.queue_depth["pipeline"] == 0 and stats.queue_depth["hanging"] == stats.submitted > 0
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(handler.shutdown(timeout=0.5)))
    stopper.start()
    stopper.join(30)  # a hang detector: the sink itself would block for 120 s
    assert not stopper.is_alive() and result == [False]
    hanging.release.set()


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    """Past the bounded queue, events are counted as dropped; the producer never waits."""
    hanging = HangingSink()
    pipeline = Pipeline([hanging], queue_size=10, batch_size=5, flush_interval_s=0.01)
    for i in range(200):
        pipeline.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i)))
    time.sleep(0.2)
    stats = pipeline.stats()
    assert sum(stats.dropped.values()) > 0
    assert sum(stats.dropped.values()) + stats.queue_depth["hanging"] + 5 >= 190
    hanging.release.set()
    pipeline.shutdown(2)


def test_flush_waits_for_everything_submitted_before_it() -> None:
    """flush() returns only after every earlier event reached the sink."""
    sink = InMemorySink()
    pipeline = Pipeline([sink], batch_size=10_000, flush_interval_s=60)  # would otherwise wait a minute
    for i in range(1234):
        pipeline.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i)))
    assert pipeline.flush(10)
    assert len(sink.events) == 1234
    pipeline.shutdown(2)


def test_malformed_payloads_never_reach_the_workflow(memory_sink: InMemorySink) -> None:
    """Odd callback payloads are logged and counted, and a row is still recorded where possible."""
    import uuid

    from langchain_core.outputs import Generation, LLMResult

    handler = VitalCallbackHandler(FAST, sinks=[memory_sink])
    rid = uuid.uuid4()
    handler.on_chat_model_start(None, [[object()]], run_id=rid, metadata={"ls_provider": 7, "ls_model_name": None},
                                invocation_params={"temperature": "hot", "max_tokens": "many"})
    handler.on_llm_end("not an LLMResult", run_id=rid)
    rid2 = uuid.uuid4()
    handler.on_llm_start({}, ["\udcff surrogate \x00 nul"], run_id=rid2)
    handler.on_llm_end(LLMResult(generations=[[Generation(text="ok", generation_info={"finish_reason": 3})]],
                                 llm_output={"token_usage": {"prompt_tokens": "NaN", "completion_tokens": None}}),
                       run_id=rid2)
    handler.on_chain_start(None, None, run_id=uuid.uuid4(), parent_run_id=uuid.uuid4(),
                           metadata={"langgraph_node": ["weird"]})
    handler.on_tool_end(None, run_id=uuid.uuid4())  # end without start
    handler.on_retriever_end(None, run_id=uuid.uuid4())  # type: ignore[arg-type]
    assert handler.flush(10)
    calls = memory_sink.of(LLMCall)
    assert len(calls) == 2
    assert handler.stats()["handler_errors"] == 0
    handler.shutdown()


def inbox_below(pipeline: Pipeline, depth: int) -> None:
    """Wait (no clock in the assertion: a hang detector only) until the dispatcher has taken the inbox
    below ``depth``, so the test does not depend on how fast this machine runs the dispatcher."""
    for _ in range(30_000):
        if pipeline.stats().queue_depth["pipeline"] < depth:
            return
        time.sleep(0.001)
    raise AssertionError("the dispatcher stopped taking events from the inbox")


class SpillingSink(Sink):
    """Always down; keeps what it cannot deliver (like the PostgreSQL sink's spill files)."""

    name = "spilling"

    def __init__(self) -> None:
        self.spilled = 0

    def export(self, batch: Sequence[Event]) -> ExportResult:
        return ExportResult.FAILURE

    def spill(self, batch: Sequence[Event]) -> int:
        self.spilled += len(batch)
        return len(batch)


@pytest.mark.parametrize("coalesce", [1, 4])
def test_a_failing_sink_spills_everything_and_drops_nothing(coalesce: int) -> None:
    """With the sink down, every event reaches the sink's own queue and its spill: none is dropped, also
    when the sink takes several batches per export."""
    sink = SpillingSink()
    sink.coalesce = coalesce  # a per-instance override, for the test
    pipeline = Pipeline([sink], queue_size=100, batch_size=10, flush_interval_s=0.01, max_retries=0,
                        retry_backoff_s=0.001)
    for i in range(2000):
        pipeline.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i)))
        if i % 50 == 49:
            inbox_below(pipeline, 50)  # a producer the dispatcher keeps up with: the inbox never overflows
    assert pipeline.flush(30)
    assert sink.spilled == 2000
    assert pipeline.stats().dropped == {}
    pipeline.shutdown(2)


class SlowSpillingSink(SpillingSink):
    """Works, but not before ``gate`` opens: the producer outruns it whatever the machine's speed, so its
    bounded queue overflows into its spill."""

    name = "slow-spilling"

    def __init__(self) -> None:
        super().__init__()
        self.exported = 0
        self.gate = threading.Event()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        self.gate.wait(60)  # a hang detector only: the test opens the gate once everything is submitted
        self.exported += len(batch)
        return ExportResult.SUCCESS


def test_a_slow_sink_overflows_into_its_spill_not_into_losses() -> None:
    """A sink that works but cannot keep up: what its queue cannot hold goes to its spill (kept, replayed
    later), never counted as lost."""
    sink = SlowSpillingSink()
    pipeline = Pipeline([sink], queue_size=1000, batch_size=50, flush_interval_s=0.01)
    for i in range(20_000):
        pipeline.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i)))
        if i % 500 == 499:
            inbox_below(pipeline, 500)  # the dispatcher keeps up with the producer; the sink does not
    sink.gate.set()
    assert pipeline.flush(60)
    assert sink.exported + sink.spilled == 20_000 and sink.spilled > 10_000
    assert pipeline.stats().dropped == {}
    pipeline.shutdown(2)


def test_a_draft_is_still_delivered_when_the_enricher_fails() -> None:
    """A processor that raises leaves the draft as captured; it is built and delivered, not lost."""
    from vital_callbacks.core.events import RAW_LLM_OUTPUT, Draft

    def broken(item: Event | Draft) -> Event | None:
        raise RuntimeError("enricher bug")

    sink = InMemorySink()
    pipeline = Pipeline([sink], broken, flush_interval_s=0.01)
    pipeline.submit(Draft.of(LLMCall, {"run_id": "a", "parent_run_id": None, "trace_id": "a", "model": "m",
                                       RAW_LLM_OUTPUT: {"token_usage": {}}}))
    assert pipeline.flush(10)
    assert [(e.run_id, e.model) for e in sink.events] == [("a", "m")]  # type: ignore[attr-defined]
    assert pipeline.stats().processor_errors == 1
    pipeline.shutdown(2)


class SlowCoalescingSink(Sink):
    """Pays per export, not per event (like a database round trip), and says so with ``coalesce``."""

    name = "slow-coalescing"
    coalesce = 4

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def export(self, batch: Sequence[Event]) -> ExportResult:
        time.sleep(0.01)
        self.sizes.append(len(batch))
        return ExportResult.SUCCESS


class SlowSink(SlowCoalescingSink):
    name = "slow"
    coalesce = 1


def test_a_sink_that_falls_behind_gets_larger_exports_up_to_its_coalesce() -> None:
    """Behind, a coalescing sink takes up to ``coalesce`` batches per export (and never more); one that
    does not coalesce keeps to the batch size; at an idle pace both get what is there."""
    coalescing, plain = SlowCoalescingSink(), SlowSink()
    pipeline = Pipeline([coalescing, plain], queue_size=100_000, batch_size=50, flush_interval_s=0.01)
    for i in range(3000):
        pipeline.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i)))
    assert pipeline.flush(60)
    assert sum(coalescing.sizes) == sum(plain.sizes) == 3000
    assert max(coalescing.sizes) == 200 and max(plain.sizes) == 50
    assert len(coalescing.sizes) < len(plain.sizes)
    coalescing.sizes.clear()
    plain.sizes.clear()
    for i in range(5):
        pipeline.submit(LLMCall(run_id=f"idle-{i}", parent_run_id=None, trace_id=f"idle-{i}"))
        assert pipeline.flush(10)
    assert coalescing.sizes == plain.sizes == [1] * 5
    assert pipeline.stats().dropped == {}
    pipeline.shutdown(2)


def test_a_small_queue_still_paces_the_dispatcher_instead_of_overflowing() -> None:
    """With ``queue_size`` below a coalescing sink's full export, the dispatcher must still stop before
    the sink's queue is full: a producer the inbox keeps up with loses nothing."""
    sink = SlowCoalescingSink()
    sink.coalesce = 8  # a full export (800) larger than the sink's whole queue (500)
    pipeline = Pipeline([sink], queue_size=500, batch_size=100, flush_interval_s=0.01)
    for i in range(3000):
        pipeline.submit(LLMCall(run_id=str(i), parent_run_id=None, trace_id=str(i)))
        if i % 25 == 24:
            inbox_below(pipeline, 50)  # so the inbox stays below the valve (125, a quarter of 500)
    assert pipeline.flush(60)
    assert pipeline.stats().dropped == {} and sum(sink.sizes) == 3000
    pipeline.shutdown(2)


def test_a_full_inbox_refuses_run_starts_only_and_the_account_balances() -> None:
    """The inbox holds callbacks. When it is full, a run's start is refused and counted as that run's
    event lost; the ends of runs it accepted always fit (their events are delivered), and the end of
    the refused run is not sent, nor counted twice."""
    import uuid

    from vital_callbacks import ToolCall

    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(queue_size=2), sinks=[sink])
    pipeline = handler.runtime.pipeline
    runs = [uuid.uuid4() for _ in range(3)]
    with pipeline._busy:  # the dispatcher takes nothing off the inbox meanwhile
        for run_id in runs:
            handler.on_tool_start({}, "2 + 2", run_id=run_id, name="calculator")
        for run_id in runs:
            handler.on_tool_end("4", run_id=run_id)
        assert len(pipeline._inbox) == 4
    handler.flush(10)
    stats = handler.stats()
    assert len(sink.of(ToolCall)) == 2 and stats["submitted"] == 2
    assert stats["dropped"] == {"pipeline": 1} and stats["handler_errors"] == 0
    assert not handler.shutdown()  # the loss is in the account over the pipeline's life


def test_a_full_inbox_stays_bounded_and_counts_every_refused_event() -> None:
    """Past its size the inbox takes only the ends of runs it accepted (up to twice its size); refused
    starts and scores are each one event lost, and the ends of refused runs are not sent at all."""
    import uuid

    from vital_callbacks import ToolCall

    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(queue_size=2), sinks=[sink])
    pipeline = handler.runtime.pipeline
    runs = [uuid.uuid4() for _ in range(50)]
    with pipeline._busy:
        for run_id in runs:
            handler.on_tool_start({}, "2 + 2", run_id=run_id, name="calculator")
        for run_id in runs:
            handler.on_tool_end("4", run_id=run_id)
        for run_id in runs:
            handler.score(run_id, "quality", 1.0)
        assert len(pipeline._inbox) == 4
    handler.flush(10)
    stats = handler.stats()
    assert len(sink.of(ToolCall)) == 2 and stats["submitted"] == 2
    assert stats["dropped"] == {"pipeline": 48 + 50}
    handler.shutdown()


def test_a_run_refused_by_a_full_inbox_is_refused_with_its_subtree() -> None:
    """A graph run whose start the inbox refused: its node and the node's model call are refused too,
    even once there is room again (they must not arrive as traces of their own); an internal chain of
    it costs no count, as it would have had no row."""
    import uuid

    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    from vital_callbacks import GraphRun, NodeRun, ToolCall

    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(queue_size=2), sinks=[sink])
    pipeline = handler.runtime.pipeline
    tools = [uuid.uuid4() for _ in range(2)]
    graph, node, step, call = (uuid.uuid4() for _ in range(4))
    node_md = {"langgraph_node": "agent", "langgraph_step": 1, "langgraph_checkpoint_ns": "agent:1"}
    with pipeline._busy:
        for run_id in tools:
            handler.on_tool_start({}, "2 + 2", run_id=run_id, name="calculator")
        handler.on_chain_start(None, {}, run_id=graph, name="LangGraph")
        handler.on_chain_start(None, {}, run_id=node, parent_run_id=graph, name="agent", metadata=node_md)
    handler.flush(10)
    handler.on_chain_start(None, {}, run_id=step, parent_run_id=node, name="RunnableSequence", metadata=node_md)
    handler.on_chat_model_start({}, [[]], run_id=call, parent_run_id=step, metadata=node_md)
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage("hi"))]]), run_id=call)
    for run_id in (step, node, graph):
        handler.on_chain_end({}, run_id=run_id)
    for run_id in tools:
        handler.on_tool_end("4", run_id=run_id)
    handler.flush(10)
    stats = handler.stats()
    assert len(sink.of(ToolCall)) == 2
    assert not sink.of(GraphRun) and not sink.of(NodeRun) and not sink.of(LLMCall)
    assert stats["dropped"] == {"pipeline": 3}  # graph, node, model call; not the internal chain
    assert stats["open_runs"] == 0
    handler.shutdown()


def test_scores_and_run_ends_after_shutdown_are_counted_lost() -> None:
    import uuid

    sink = InMemorySink()
    handler = VitalCallbackHandler(FAST, sinks=[sink])
    run_id = uuid.uuid4()
    handler.on_tool_start({}, "2 + 2", run_id=run_id, name="calculator")
    assert handler.shutdown()
    handler.score(uuid.uuid4(), "quality", 1.0)
    handler.on_tool_end("4", run_id=run_id)
    late = uuid.uuid4()
    handler.on_tool_start({}, "late", run_id=late, name="calculator")
    assert handler.last_trace_id == str(late)  # a score for it finds no run, rather than the one before
    assert handler.stats()["dropped"] == {"pipeline": 3}
    assert not sink.events


def test_the_end_of_a_run_forgotten_on_the_callers_side_is_counted_when_refused() -> None:
    """Past ``max_open_runs`` the hooks forget the oldest open runs (a cancelled ainvoke never ends);
    if such a run's end then comes after shutdown, it is still counted lost, not passed over."""
    import uuid

    handler = VitalCallbackHandler(Settings(max_open_runs=1), sinks=[InMemorySink()])
    first, second = uuid.uuid4(), uuid.uuid4()
    handler.on_tool_start({}, "1", run_id=first, name="calculator")
    handler.on_tool_start({}, "2", run_id=second, name="calculator")
    handler.shutdown()
    handler.on_tool_end("1", run_id=first)
    handler.on_tool_end("2", run_id=second)
    assert handler.stats()["dropped"] == {"pipeline": 2}


def test_a_run_whose_start_could_not_be_recorded_is_counted_lost() -> None:
    """A start payload the dispatcher cannot read (tags that are no list) is a processor error; the
    run's end then counts its event lost, so flush() says so."""
    import uuid

    sink = InMemorySink()
    handler = VitalCallbackHandler(FAST, sinks=[sink])
    run_id = uuid.uuid4()
    handler.on_tool_start({}, "2 + 2", run_id=run_id, name="calculator", tags=5)  # type: ignore[arg-type]
    handler.on_tool_end("4", run_id=run_id)
    assert handler.flush(10) is False
    stats = handler.stats()
    assert stats["dropped"] == {"pipeline": 1} and stats["processor_errors"] >= 1
    assert not sink.events
    handler.shutdown()
