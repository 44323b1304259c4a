"""LangChain / LangGraph callbacks -> immutable events, on the caller's thread, in microseconds.

The hot path only records timestamps and identities in a small run map and, when a run ends, hands
the run's values to the pipeline's queue as a :class:`~vital_callbacks.core.events.Draft`; the dispatcher
builds the frozen event once, with usage and cost added. Reading usage, counting tokens and pricing
happen on the worker (see :mod:`vital_callbacks.enrich`). Every hook goes through one error guard,
so a surprise payload is logged once and counted, and never reaches the user's workflow.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langgraph.callbacks import GraphCallbackHandler, GraphInterruptEvent, GraphResumeEvent

from vital_callbacks.budgets import Budget, BudgetGuard
from vital_callbacks.budgets.refusals import quiet_refusals
from vital_callbacks.capture.llm import LLMHooks
from vital_callbacks.capture.runs import OpenRuns, Run, error_fields, guard, score_fields
from vital_callbacks.capture.tree import app_traceparent, context_parent, is_wrapper, own_tags, subgraph_of
from vital_callbacks.core import attribution
from vital_callbacks.core.attribution import Attribution
from vital_callbacks.core.events import (
    LATE_CALLS,
    USER_METADATA,
    Draft,
    Event,
    GraphRun,
    NodeRun,
    RetrieverCall,
    Status,
    ToolCall,
)
from vital_callbacks.core.scores import ScoreValue, make_score
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime import Pipeline, Runtime, default_runtime, environment_settings, runtime_for
from vital_callbacks.sinks.base import Sink

logger = logging.getLogger("vital_callbacks")

_RECENT_RUNS = 10_000
_TOKENS = itertools.count(1)


class VitalCallbackHandler(LLMHooks, GraphCallbackHandler):
    """Pass one to ``config["callbacks"]``; every run under it becomes priced, attributed events.

    A handler is a cheap view on a :class:`~vital_callbacks.runtime.Runtime` (the process-wide default,
    built from the environment on first use, unless ``runtime=`` or ``settings`` name another), with
    its own run map and per-handler defaults. Build one per request: no thread, engine or query is
    made, and leaving its ``with`` block only flushes. ``sinks=[...]`` gives the handler a private
    runtime of its own, which its ``shutdown()`` stops.
    """

    run_inline = True  # never blocks, so skip LangChain's thread-executor hop under async
    raise_error = False

    def __init__(self, settings: Settings | None = None, *, runtime: Runtime | None = None,
                 sinks: Sequence[Sink | str] | None = None, budgets: Sequence[Budget] = (),
                 tenant_id: str | None = None, user_id: str | None = None, session_id: str | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        self._owns_runtime = False
        if sinks and all(isinstance(s, str) for s in sinks):
            overrides["sinks"], sinks = list(sinks), None  # sink names, as in VITAL_SINKS
        if runtime is None:
            if sinks is not None:
                runtime = Runtime(_settings(settings, overrides), sinks=[s for s in sinks if isinstance(s, Sink)])
                self._owns_runtime = True
            elif settings is None and not overrides:
                runtime = default_runtime()
            else:
                runtime = runtime_for(_settings(settings, overrides))
        self.runtime = runtime
        self.settings = runtime.settings
        self._prices = runtime.prices
        self.budgets: BudgetGuard = runtime.budgets
        """Spend limits in force (``VITAL_BUDGETS_FILE``, and ``budgets=`` of any handler on the runtime)."""
        own = runtime.budgets.add(budgets) if budgets else ()
        self._budget_scope: tuple[int, ...] = (*runtime.budgets.everyone, *own)
        self._stop_budgets = any(runtime.budgets.budgets[i].action == "stop" for i in self._budget_scope)
        if self._stop_budgets:
            self.raise_error = True  # so LangChain lets BudgetExceeded reach the workflow
            quiet_refusals()
        self._submit = runtime.submit
        self._token = next(_TOKENS)
        """This handler's key for ``last_trace_id`` (unique for the process's life, unlike ``id()``)."""
        s = runtime.settings
        self._defaults = Attribution(tenant_id or s.tenant_id, user_id or s.user_id, session_id or s.session_id)
        # Not taken as defaults (a handler built in one request and shared afterwards would attribute
        # later requests to it), only to say so when a trace starts outside any attribution: the sign
        # of a stream consumed after the block it was created in (a StreamingResponse).
        self._built_in = attribution.current()
        self._app_spans = runtime.joins_app_trace
        self._capture = s.capture_content
        self._keep_metadata = s.metadata_keys != ["-"]
        # The last ended runs, for scores, as tuples of strings: the GC stops tracking those, where
        # 10,000 long-lived run objects would keep triggering full collections in the user's process.
        self._recent: OrderedDict[str, tuple[str | None, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._runs = OpenRuns(self._lock, s.max_open_runs, s.open_run_timeout_s)
        self._errors = 0
        self._logged_errors: set[tuple[str, type[BaseException]]] = set()

    @property
    def last_trace_id(self) -> str | None:
        """The trace id of the last root run this handler started *in the current context* (this thread,
        this asyncio task): with one handler shared by concurrent requests, each request sees its own.
        A run started in another context (``graph.batch``'s threads, a task created before the call)
        is not seen here: use :func:`vital_callbacks.capture_traces`, or pass your own
        ``config["run_id"]``, which becomes the trace id."""
        return attribution.last_trace(self._token)

    # -- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event so far is delivered to every sink; False on timeout or loss."""
        return self.runtime.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush; a handler with a private runtime (``sinks=``) also stops it. A shared runtime is never
        stopped by a handler: it lives until interpreter exit (or ``runtime.shutdown()``)."""
        if self._owns_runtime:
            return self.runtime.shutdown(timeout)
        return self.runtime.flush(self.settings.shutdown_timeout_s if timeout is None else timeout)

    def __enter__(self) -> VitalCallbackHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def stats(self) -> dict[str, Any]:
        """Delivery counters, problems, unpriced models and handler errors, for health checks."""
        return {**self.runtime.stats(), "handler_errors": self._errors, "open_runs": len(self._runs),
                "evicted_runs": self._runs.evicted}

    @property
    def pipeline(self) -> Pipeline:
        return self.runtime.pipeline

    def _internal_error(self, hook: str, exc: Exception) -> None:
        self._errors += 1
        key = (hook, type(exc))
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            logger.warning("vital-callbacks: %s failed on an unexpected payload (%r); the run continues, "
                           "further errors of this kind are only counted", hook, exc, exc_info=True)

    # -- run map -----------------------------------------------------------------------------------
    def _open(self, kind: str, run_id: UUID, parent: Run | None, name: str,
              metadata: Mapping[str, Any] | None, tags: list[str] | None) -> Run:
        run = Run(kind, str(run_id), name)
        if metadata and self._keep_metadata:
            run.user_metadata = metadata
        run.thread_id = attribution.thread_of(metadata) or (parent.thread_id if parent is not None else None)
        if parent is None:
            parent = self._context_parent()
        if parent is None:
            if kind == "chain":
                kind = run.kind = "graph"
            attr = attribution.from_metadata(metadata).merged_over(attribution.current()).merged_over(self._defaults)
            if self._built_in is not attribution.EMPTY and attr == attribution.EMPTY:
                attribution.warn_outside_block(self._built_in)
            run.attr = attr
            run.graph = attr.agent_id or name
            node = metadata.get("langgraph_node") if metadata and kind != "graph" else None
            if isinstance(node, str):
                # A handler given to a model or tool at construction, inside a node: it sees no graph run,
                # but the run's metadata says which node it ran in (and the model's class is no graph).
                run.node = node
                run.graph = attr.agent_id
            run.tags = own_tags(tags)
            if self._app_spans:
                run.traceparent = app_traceparent()
            attribution.note_trace(self._token, run.run_id)
        else:
            if parent.root is None and is_wrapper(parent.name) and parent.graph == parent.name:
                parent.graph = name  # the trace is the graph the fallbacks wrap, not "RunnableWithFallbacks"
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
        self._runs.add(run_id, run)
        return run

    def _context_parent(self) -> Run | None:
        """An open run of ours that encloses a run LangChain started as a root (see ``context_parent``)."""
        enclosing = context_parent()
        return self._runs.get(enclosing) if enclosing is not None else None

    def _parent(self, parent_run_id: UUID | None) -> Run | None:
        return self._runs.get(parent_run_id) if parent_run_id is not None else None

    def _close(self, run_id: UUID) -> Run | None:
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is not None and run.kind != "chain":
                self._recent[run.run_id] = score_fields(run)
                if len(self._recent) > _RECENT_RUNS:
                    self._recent.popitem(last=False)
            return run

    @staticmethod
    def _context(run_id: str, known: tuple[str | None, ...]) -> dict[str, Any]:
        """What a score needs to know about the run it judges."""
        return dict(zip(("run_id", "trace_id", "tenant_id", "user_id", "session_id", "graph", "node"),
                        (run_id, *known), strict=True))

    # -- scores ------------------------------------------------------------------------------------
    def score(self, run_or_trace_id: str | UUID, name: str, value: ScoreValue, comment: str | None = None) -> str:
        """Attach a quality score (numeric, boolean or categorical) to a run or a trace; returns its id.

        Works while the run is open, after it ended (its events may still be queued), and for ids this
        handler never saw (the store matches them later, or flags them unmatched).
        """
        target = str(run_or_trace_id)
        with self._lock:
            known = self._recent.get(target)
            if known is None:
                run = next((r for r in self._runs.values() if r.run_id == target), None)
                known = score_fields(run) if run is not None else None
        context = self._context(target, known) if known is not None else None
        event = make_score(target, name, value, comment=comment, context=context)
        self._submit(event)
        return event.run_id

    def _base(self, run: Run, cls: type[Event], status: Status, error_type: str | None,
              error_message: str | None) -> Draft:
        """The fields every event has, as the draft the hook completes and hands off."""
        duration = time.perf_counter() - run.start_perf
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
        if run.user_metadata is not None:  # the run's metadata dict as LangChain passed it: filtered on the worker
            draft[USER_METADATA] = run.user_metadata
        if run.subgraph is not None:
            draft["subgraph"] = run.subgraph
        if run.traceparent is not None:
            draft["traceparent"] = run.traceparent
        draft.cls = cls
        return draft

    # -- chains: graph runs and node runs ----------------------------------------------------------
    @guard
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "chain"
        parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
        # The root of an invoke (or of a tree we joined half-way) is a graph run; see _open.
        run = self._open("chain", run_id, parent, name, metadata, tags)
        if run.kind == "graph":
            return
        node = metadata.get("langgraph_node") if metadata else None
        if node is not None and node == name:
            ns = metadata.get("langgraph_checkpoint_ns") if metadata else None
            # A subgraph's inner root inherits the node's keys (and may even share its name): it runs
            # in the same checkpoint namespace, a real node execution in a new one.
            if ns != run.node_ns:
                run.kind = "node"
                run.node = name
                run.node_ns = ns
                run.checkpoint_ns = ns
                step = metadata.get("langgraph_step") if metadata else None
                run.step = step if isinstance(step, int) else None
                if parent is not None:
                    run.subgraph = subgraph_of(parent)

    @guard
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_chain(run_id, "success", None, None)

    @guard
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_chain(run_id, *error_fields(error))

    def _end_chain(self, run_id: UUID, status: Status, error_type: str | None, error_message: str | None) -> None:
        run = self._close(run_id)
        if run is None or run.kind == "chain":
            return
        if run.kind == "node":
            base = self._base(run, NodeRun, status, error_type, error_message)
            base["step"] = run.step
            base["checkpoint_ns"] = run.checkpoint_ns
        else:
            base = self._base(run, GraphRun, status, error_type, error_message)
            if run.interrupts and status == "success":
                base["status"] = "interrupted"
            base["name"] = run.name
            base["interrupts"] = run.interrupts
            base["resumed"] = run.resumed
            with self._lock:  # read with the calls' own submits (see _submit_call)
                if run.open_calls > 0:  # cancelled or failed with calls still running: they are its too
                    late = self._runs.running_elsewhere(run)
                    if late:
                        base[LATE_CALLS] = late
                self._submit(base)
            return
        self._submit(base)

    # -- LangGraph lifecycle (only GraphCallbackHandler subclasses receive these) ------------------
    @guard
    def on_interrupt(self, event: GraphInterruptEvent) -> None:
        run = self._runs.get(event.run_id) if event.run_id is not None else None
        if run is not None:
            (run.root or run).interrupts += len(event.interrupts) or 1

    @guard
    def on_resume(self, event: GraphResumeEvent) -> None:
        run = self._runs.get(event.run_id) if event.run_id is not None else None
        if run is not None:
            (run.root or run).resumed = True

    # -- tools and retrievers ----------------------------------------------------------------------
    @guard
    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        run = self._open("tool", run_id, self._parent(parent_run_id), name, metadata, tags)
        if self._capture:
            run.raw_input = input_str

    @guard
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_tool(run_id, output, "success", None, None)

    @guard
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_tool(run_id, None, *error_fields(error))

    def _end_tool(self, run_id: UUID, output: Any, status: Status, error_type: str | None,
                  error_message: str | None) -> None:
        run = self._close(run_id)
        if run is None:
            return
        fields = self._base(run, ToolCall, status, error_type, error_message)
        fields["name"] = run.name
        fields["input"] = run.raw_input if isinstance(run.raw_input, str) else None
        fields["raw_output"] = output if self._capture else None
        self._submit(fields)

    @guard
    def on_retriever_start(self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, tags: list[str] | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "retriever"
        run = self._open("retriever", run_id, self._parent(parent_run_id), name, metadata, tags)
        if self._capture:
            run.raw_input = query

    @guard
    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        self._end_retriever(run_id, len(documents) if documents is not None else 0, "success", None, None)

    @guard
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_retriever(run_id, 0, *error_fields(error))

    def _end_retriever(self, run_id: UUID, documents: int, status: Status, error_type: str | None,
                       error_message: str | None) -> None:
        run = self._close(run_id)
        if run is None:
            return
        fields = self._base(run, RetrieverCall, status, error_type, error_message)
        fields["name"] = run.name
        fields["documents"] = documents
        fields["query"] = run.raw_input if isinstance(run.raw_input, str) else None
        self._submit(fields)

    def submit(self, event: Event) -> None:
        """Queue an event built elsewhere (e.g. a score); same path as the callbacks'."""
        self._submit(event)


def score(run_or_trace_id: str | UUID, name: str, value: ScoreValue, comment: str | None = None,
          settings: Settings | None = None) -> str:
    """Record a score that arrives later (user feedback, an offline evaluator), from any process.

    It goes through the runtime for ``settings`` (default: the process-wide one, from the environment),
    and the SQL store attaches it to the run or trace with that id.
    """
    return VitalCallbackHandler(settings).score(run_or_trace_id, name, value, comment)


def _settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """``settings`` with keyword overrides (from the environment when none are given)."""
    if settings is None:
        return environment_settings(overrides)
    return settings.model_copy(update=overrides) if overrides else settings
