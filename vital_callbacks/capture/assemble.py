"""The run tree, rebuilt on the dispatcher thread from what the hooks recorded.

The hooks on the caller's thread only append a tuple per callback (its values as LangChain passed
them, and a clock reading) to the pipeline's inbox; an :class:`Assembler`, one per handler and
touched by the dispatcher thread alone, keeps the open runs, decides what each run is (graph run,
node run, an internal chain that gets no row), resolves attribution, subgraph and tool ownership,
and turns each ended run into the :class:`~vital_callbacks.core.events.Draft` the processors
complete. The inbox keeps the callbacks' causal order (a run's start before its children's, their
ends before its end), so the tree comes out as the hooks would have built it, without a lock on
the caller's thread.

A record is ``(assembler, op, *values)``; the layouts are the ``record_*`` helpers' below.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from msgspec import to_builtins
from msgspec.structs import replace

from vital_callbacks.capture.runs import OpenRuns, Run, error_fields, score_fields
from vital_callbacks.capture.tree import has_row, is_wrapper, names_node, own_tags, subgraph_of
from vital_callbacks.core import attribution
from vital_callbacks.core.attribution import Attribution
from vital_callbacks.core.events import (
    ENCLOSING_TOOLS,
    LATE_CALLS,
    RAW_LLM_OUTPUT,
    USER_METADATA,
    Draft,
    Event,
    GraphRun,
    LLMCall,
    NodeRun,
    RetrieverCall,
    Score,
    Status,
    ToolCall,
)
from vital_callbacks.runtime.pipeline import CLOSES, OPENS

logger = logging.getLogger("vital_callbacks")

START, END = OPENS, CLOSES
TOKEN, INTERRUPT, RESUME, SCORE = 2, 3, 4, 5
"""A record's ``op``: a run's start and end (the pipeline knows these two), a first token, a graph's
interrupt and resume, a score."""

_RECENT_RUNS = 10_000
_KINDS: dict[str, type[Event]] = {"tool": ToolCall, "retriever": RetrieverCall, "llm": LLMCall}


class Assembler:
    """One handler's open runs and recently ended ones (for scores), on the dispatcher thread."""

    def __init__(self, defaults: Attribution, built_in: Attribution, *, keep_metadata: bool,
                 capture_content: bool, max_open: int, timeout_s: float) -> None:
        self.defaults = defaults
        self.built_in = built_in
        """The attribution the handler was built in: only to say so when a trace starts outside any."""
        self.keep_metadata = keep_metadata
        self.capture_content = capture_content
        self.runs = OpenRuns(max_open, timeout_s)
        # The last ended runs, for scores, as tuples of strings: the GC stops tracking those, where
        # 10,000 long-lived run objects would keep triggering full collections in the user's process.
        self.recent: OrderedDict[str, tuple[str | None, ...]] = OrderedDict()
        self.unrecorded: OrderedDict[Any, None] = OrderedDict()
        """Runs whose start could not be recorded (a payload the assembler could not read)."""

    def __call__(self, record: tuple[Any, ...]) -> Event | Draft | None:
        """The draft (or score event) a record completes, if any."""
        op = record[1]
        if op == END:
            return self._end(record)
        if op == START:
            try:
                self._start(record)
            except Exception:
                _, _, kind, run_id, parent_id, name, metadata = record[:7]
                try:
                    counted = has_row(kind, parent_id is None, metadata, name)
                except Exception:  # metadata that is no mapping: counted, to be safe
                    counted = True
                if counted:
                    self.unrecorded[run_id] = None  # a run that has a row: its end counts its event lost
                    if len(self.unrecorded) > _RECENT_RUNS:
                        self.unrecorded.popitem(last=False)
                raise
        elif op == TOKEN:
            run = self.runs.get(record[2])
            if run is not None and run.first_token is None:
                run.first_token = record[3]
        elif op == INTERRUPT:
            run = self.runs.get(record[2])
            if run is not None:
                (run.root or run).interrupts += record[3]
        elif op == RESUME:
            run = self.runs.get(record[2])
            if run is not None:
                (run.root or run).resumed = True
        elif op == SCORE:
            return self._score(record[2])
        return None

    def counts(self) -> tuple[int, int]:
        """Open runs, and runs forgotten without an end."""
        return len(self.runs), self.runs.evicted

    # -- starts ------------------------------------------------------------------------------------
    def _start(self, record: tuple[Any, ...]) -> None:
        _, _, kind, run_id, parent_id, name, metadata, tags, wall, perf, root_context, payload = record
        parent = self.runs.get(parent_id) if parent_id is not None else None
        # msgspec writes a UUID's text in C, four times as fast as its Python ``__str__``, the same text
        run = Run(kind, to_builtins(run_id) if run_id.__class__ is UUID else str(run_id), name, wall, perf)
        if metadata and self.keep_metadata:
            run.user_metadata = metadata
        run.thread_id = attribution.thread_of(metadata) or (parent.thread_id if parent is not None else None)
        if parent is None and root_context is not None and root_context[1] is not None:
            parent = self.runs.get(root_context[1])  # an attempt of fallbacks, a graph run inside a node
        if parent is None:
            self._root(run, metadata, tags, root_context)
        else:
            self._child(run, parent, tags)
        if kind == "chain" and run.kind == "chain":
            self._chain(run, parent, metadata)
        elif kind == "llm":
            run.thread, invocation_params, serialized, run.raw_input = payload
            run.read_model_params(metadata or {}, invocation_params or {}, serialized)
        elif payload is not None:
            run.raw_input = payload  # a tool's input, a retriever's query (with content capture)
        self.runs.add(run_id, run)

    def _root(self, run: Run, metadata: Mapping[str, Any] | None, tags: list[str] | None,
              root_context: tuple[Any, ...] | None) -> None:
        current = root_context[0] if root_context is not None else attribution.EMPTY
        if run.kind == "chain":
            run.kind = "graph"
        attr = attribution.from_metadata(metadata).merged_over(current).merged_over(self.defaults)
        if self.built_in is not attribution.EMPTY and attr == attribution.EMPTY:
            attribution.warn_outside_block(self.built_in)
        run.attr = attr
        run.graph = attr.agent_id or run.name
        node = metadata.get("langgraph_node") if metadata and run.kind != "graph" else None
        if isinstance(node, str):
            # A handler given to a model or tool at construction, inside a node: it sees no graph run,
            # but the run's metadata says which node it ran in (and the model's class is no graph).
            run.node = node
            run.graph = attr.agent_id
        run.tags = own_tags(tags)
        run.traceparent = root_context[2] if root_context is not None else None

    @staticmethod
    def _child(run: Run, parent: Run, tags: list[str] | None) -> None:
        if parent.root is None and is_wrapper(parent.name) and parent.graph == parent.name:
            parent.graph = run.name  # the trace is the graph the fallbacks wrap, not "RunnableWithFallbacks"
        run.record_id = parent.child_parent_id()
        run.trace_id = parent.trace_id
        run.root = parent.root or parent
        run.attr = parent.attr
        run.graph = parent.graph
        run.node = parent.node
        run.node_ns = parent.node_ns
        run.subgraph = parent.subgraph
        run.traceparent = parent.traceparent
        # Its own tags (LangChain passes the inherited ones along): a with_config(tags=[...]) on a
        # model inside a node is on that call's row, not replaced by the root's.
        run.tags = own_tags(tags) if tags else parent.tags
        if parent.kind == "tool":
            run.tool, run.tool_ids = parent.name, (*parent.tool_ids, parent.run_id)
        else:
            run.tool, run.tool_ids = parent.tool, parent.tool_ids

    @staticmethod
    def _chain(run: Run, parent: Run | None, metadata: Mapping[str, Any] | None) -> None:
        """A chain inside a trace is a node run when LangGraph says so, else an internal step (no row)."""
        if not names_node(metadata, run.name):
            return
        ns = metadata.get("langgraph_checkpoint_ns") if metadata else None
        # A subgraph's inner root inherits the node's keys (and may even share its name): it runs in
        # the same checkpoint namespace, a real node execution in a new one.
        if ns == run.node_ns:
            return
        run.kind = "node"
        run.node = run.name
        run.node_ns = run.checkpoint_ns = ns
        step = metadata.get("langgraph_step") if metadata else None
        run.step = step if isinstance(step, int) else None
        if parent is not None:
            run.subgraph = subgraph_of(parent)

    # -- ends --------------------------------------------------------------------------------------
    def _end(self, record: tuple[Any, ...]) -> Draft | None:
        _, _, run_id, perf, error, payload = record
        run = self.runs.pop(run_id, None)
        if run is None and self.unrecorded and run_id in self.unrecorded:
            del self.unrecorded[run_id]
            raise LookupError(f"the start of run {run_id} could not be recorded")
        if run is None or run.kind == "chain":
            return None  # an internal step, or never started here (forgotten, or its start refused and counted)
        self.recent[run.run_id] = score_fields(run)
        if len(self.recent) > _RECENT_RUNS:
            self.recent.popitem(last=False)
        status, error_type, error_message = ("success", None, None) if error is None else error_fields(error)
        if run.kind == "llm":
            if run.root is not None:
                run.root.open_calls -= 1
            return self._llm(run, perf, status, error_type, error_message, payload)
        if run.kind == "node":
            draft = self._base(run, NodeRun, perf, status, error_type, error_message)
            draft["step"] = run.step
            draft["checkpoint_ns"] = run.checkpoint_ns
            return draft
        if run.kind == "graph":
            return self._graph(run, perf, status, error_type, error_message, payload)
        draft = self._base(run, _KINDS[run.kind], perf, status, error_type, error_message)
        draft["name"] = run.name
        if run.kind == "tool":
            draft["input"] = run.raw_input if isinstance(run.raw_input, str) else None
            draft["raw_output"] = payload if self.capture_content else None
        else:
            draft["documents"] = payload or 0
            draft["query"] = run.raw_input if isinstance(run.raw_input, str) else None
        return draft

    def _graph(self, run: Run, perf: float, status: Status, error_type: str | None, error_message: str | None,
               thread: int | None) -> Draft:
        draft = self._base(run, GraphRun, perf, status, error_type, error_message)
        if run.interrupts and status == "success":
            draft["status"] = "interrupted"
        draft["name"] = run.name
        draft["interrupts"] = run.interrupts
        draft["resumed"] = run.resumed
        if run.open_calls > 0:  # cancelled or failed with calls still running: they are its too
            late = self.runs.running_elsewhere(run, thread)
            if late:
                draft[LATE_CALLS] = late
        return draft

    def _llm(self, run: Run, perf: float, status: Status, error_type: str | None, error_message: str | None,
             payload: tuple[Any, ...] | None) -> Draft:
        draft = self._base(run, LLMCall, perf, status, error_type, error_message)
        output, llm_output, priced = payload if payload is not None else (None, None, None)
        if priced:
            draft.update(priced)  # read and priced on the caller's thread, under a stop budget
        ttft = run.first_token - run.start_perf if run.first_token is not None else None
        draft.setdefault("token_source", "none")
        draft["provider"] = run.provider
        draft["model"] = draft["requested_model"] = run.model
        draft["temperature"] = run.params_temperature
        draft["max_tokens"] = run.max_tokens
        draft["time_to_first_token_s"] = ttft
        draft["streamed"] = ttft is not None
        draft["raw_input"] = run.raw_input
        draft["raw_output"] = output
        draft["tool"] = run.tool
        if run.tool_ids:
            draft[ENCLOSING_TOOLS] = run.tool_ids
        if llm_output is not None:
            draft[RAW_LLM_OUTPUT] = llm_output
        return draft

    @staticmethod
    def _base(run: Run, cls: type[Event], perf: float, status: Status, error_type: str | None,
              error_message: str | None) -> Draft:
        """The fields every event has."""
        duration = perf - run.start_perf
        attr = run.attr
        draft = Draft(
            run_id=run.run_id,
            parent_run_id=run.record_id,
            trace_id=run.trace_id,
            tenant_id=attr.tenant_id,
            user_id=attr.user_id,
            session_id=attr.session_id,
            graph=run.graph,
            node=run.node,
            tags=run.tags,
            thread_id=run.thread_id,
            start_time=run.start_wall,
            end_time=run.start_wall + duration,
            duration_s=duration,
            status=status,
            error_type=error_type,
            error_message=error_message,
        )
        if run.user_metadata is not None:  # the run's metadata dict as LangChain passed it: filtered later
            draft[USER_METADATA] = run.user_metadata
        if run.subgraph is not None:
            draft["subgraph"] = run.subgraph
        if run.traceparent is not None:
            draft["traceparent"] = run.traceparent
        draft.cls = cls
        return draft

    # -- scores ------------------------------------------------------------------------------------
    def _score(self, event: Score) -> Score:
        """A score with what is known of the run it judges: ended recently, or still open."""
        known = self.recent.get(event.target_id)
        if known is None:
            run = next((r for r in self.runs.values() if r.run_id == event.target_id), None)
            known = score_fields(run) if run is not None else None
        if known is None:
            return event
        trace_id, tenant_id, user_id, session_id, graph, node = known
        return replace(event, parent_run_id=event.target_id, trace_id=trace_id or event.target_id,
                       tenant_id=tenant_id, user_id=user_id, session_id=session_id, graph=graph, node=node,
                       matched=True)
