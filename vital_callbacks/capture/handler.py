"""LangChain / LangGraph callbacks -> immutable events; on the caller's thread, one tuple per callback.

A hook appends what LangChain passed it (references, no copies) and a clock reading to the
pipeline's inbox, and returns: no lock, no lookup, no event. The dispatcher thread rebuilds the run
tree from those records (:mod:`vital_callbacks.capture.assemble`) and builds each event once, with
usage and cost added (:mod:`vital_callbacks.enrich`). Only a stop budget does more here, since its
reservation must be made before the call (see :mod:`vital_callbacks.capture.llm`). Every hook goes
through one error guard, so a surprise payload is logged once and counted, and never reaches the
user's workflow.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langgraph.callbacks import GraphCallbackHandler, GraphInterruptEvent, GraphResumeEvent

from vital_callbacks.budgets import Budget, BudgetGuard
from vital_callbacks.budgets.refusals import quiet_refusals
from vital_callbacks.capture.assemble import END, INTERRUPT, RESUME, SCORE, START, Assembler
from vital_callbacks.capture.llm import BudgetScope, LLMHooks
from vital_callbacks.capture.runs import Run, forget_oldest, guard
from vital_callbacks.capture.tree import app_traceparent, context_parent, has_row
from vital_callbacks.core import attribution
from vital_callbacks.core.attribution import Attribution
from vital_callbacks.core.events import Event
from vital_callbacks.core.scores import ScoreValue, make_score
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime import Pipeline, Runtime, default_runtime, environment_settings, runtime_for
from vital_callbacks.sinks.base import Sink

logger = logging.getLogger("vital_callbacks")

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
        self._lose = runtime.pipeline.count_lost
        self._token = next(_TOKENS)
        """This handler's key for ``last_trace_id`` (unique for the process's life, unlike ``id()``)."""
        s = runtime.settings
        self._defaults = Attribution(tenant_id or s.tenant_id, user_id or s.user_id, session_id or s.session_id)
        # The attribution it is built in is not taken as defaults (a handler built in one request and
        # shared afterwards would attribute later requests to it), only to say so when a trace starts
        # outside any attribution: the sign of a stream consumed after the block it was created in.
        self._app_spans = runtime.joins_app_trace
        self._capture = s.capture_content
        self._assembler = Assembler(self._defaults, attribution.current(), keep_metadata=s.metadata_keys != ["-"],
                                    capture_content=s.capture_content, max_open=s.max_open_runs,
                                    timeout_s=s.open_run_timeout_s)
        """This handler's run tree, kept on the dispatcher thread from the records the hooks append."""
        self._streamed: set[UUID] = set()
        """LLM calls whose first token was recorded (one record per call, not one per token)."""
        self._scopes: dict[UUID, BudgetScope] = {}
        """Under a stop budget only: each open run's tenant, user and graph, which a reservation needs
        on this thread, before the call."""
        self._calls: dict[UUID, Run] = {}
        """Under a stop budget only: the open LLM calls' reservations."""
        self._open: dict[UUID, bool] = {}
        """The runs this handler recorded a start of and no end yet, each with whether it makes a row
        (a chain makes one as a graph or node run): so a run's parent is known to be recorded here
        (else its start carries the caller's context: a handler given to a model inside a node sees
        no graph run), and a refused run's end is counted once, only when it would have had a row."""
        self._refused: dict[UUID, None] = {}
        """Runs the inbox refused (full or stopped): their ends and their children's records are not
        sent, so a subtree is refused whole rather than arriving as roots of their own."""
        self._max_open = s.max_open_runs
        self._errors = 0
        self._logged_errors: set[tuple[str, type[BaseException]]] = set()

    @property
    def last_trace_id(self) -> str | None:
        """The trace id of the last trace this handler started *in the current context* (this thread,
        this asyncio task): a root run, or a run whose parent it did not see (a model given the handler
        at construction, inside a node); with one handler shared by concurrent requests, each request
        sees its own.
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
        open_runs, evicted = self._assembler.counts()
        return {**self.runtime.stats(), "handler_errors": self._errors, "open_runs": open_runs,
                "evicted_runs": evicted}

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

    # -- recording ---------------------------------------------------------------------------------
    def _started(self, kind: str, run_id: UUID, parent_run_id: UUID | None, name: str,
                 metadata: Mapping[str, Any] | None, tags: list[str] | None, payload: object = None) -> None:
        """Record a run's start: its values as LangChain passed them, two clock readings and, for a
        run whose parent was not recorded here, what the caller's context knows (attribution, the
        enclosing run, the app's span)."""
        opens = self._open
        known: bool | None  # its parent: recorded here, refused here, or neither (a trace starts here)
        if parent_run_id is not None and parent_run_id in opens:
            known = True
        elif parent_run_id is not None and parent_run_id in self._refused:
            known = False  # its parent could not be recorded: nor can it be, as the parent's child
        else:
            known = None
        if known is None:
            root = (attribution.current(), context_parent(), app_traceparent() if self._app_spans else None)
            attribution.note_trace(self._token, str(run_id))  # even if refused: a score finds no run, not another
        else:
            root = None
        rows = has_row(kind, known is None, metadata, name)
        if known is False:
            self._refuse(run_id, rows)
        elif self._submit((self._assembler, START, kind, run_id, parent_run_id, name, metadata, tags, time.time(),
                           time.perf_counter(), root, payload)):
            opens[run_id] = rows
            if len(opens) > self._max_open:
                forget_oldest(opens, self._max_open)  # runs that never ended (a cancelled ainvoke)
        else:
            self._refuse(run_id, rows)
        if self._stop_budgets:
            self._scope_run(run_id, parent_run_id, kind, name, metadata, None if root is None else root[1])

    def _refuse(self, run_id: UUID, rows: bool) -> None:
        if rows:
            self._lose()  # the run's one event; its end, and its children's records, are not sent
        self._refused[run_id] = None
        if len(self._refused) > self._max_open:
            forget_oldest(self._refused, self._max_open)

    def _ended(self, run_id: UUID, error: BaseException | None = None, payload: object = None) -> None:
        rows = self._open.pop(run_id, None)
        if rows is None and run_id in self._refused:
            self._refused.pop(run_id, None)  # its start was refused, and counted then
        else:
            end = (self._assembler, END, run_id, time.perf_counter(), error, payload)
            if not self._submit(end) and rows is not False:
                self._lose()  # a run that has a row, or one forgotten here (counted: a loss must not go unsaid)
        if self._stop_budgets:
            self._scopes.pop(run_id, None)

    # -- scores ------------------------------------------------------------------------------------
    def score(self, run_or_trace_id: str | UUID, name: str, value: ScoreValue, comment: str | None = None) -> str:
        """Attach a quality score (numeric, boolean or categorical) to a run or a trace; returns its id.

        Works while the run is open, after it ended (its events may still be queued), and for ids this
        handler never saw (the store matches them later, or flags them unmatched).
        """
        event = make_score(str(run_or_trace_id), name, value, comment=comment)
        if not self._submit((self._assembler, SCORE, event)):  # the run's context is added where the runs are
            self._lose()
        return event.run_id

    # -- chains: graph runs and node runs ----------------------------------------------------------
    @guard
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "chain"
        self._started("chain", run_id, parent_run_id, name, metadata, tags)

    @guard
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, None, threading.get_ident())  # the thread: a graph run's calls elsewhere run on

    @guard
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, error, threading.get_ident())

    # -- LangGraph lifecycle (only GraphCallbackHandler subclasses receive these) ------------------
    @guard
    def on_interrupt(self, event: GraphInterruptEvent) -> None:
        if event.run_id is not None:
            self._submit((self._assembler, INTERRUPT, event.run_id, len(event.interrupts) or 1))

    @guard
    def on_resume(self, event: GraphResumeEvent) -> None:
        if event.run_id is not None:
            self._submit((self._assembler, RESUME, event.run_id))

    # -- tools and retrievers ----------------------------------------------------------------------
    @guard
    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        self._started("tool", run_id, parent_run_id, name, metadata, tags, input_str if self._capture else None)

    @guard
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, None, output if self._capture else None)

    @guard
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, error)

    @guard
    def on_retriever_start(self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, tags: list[str] | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "retriever"
        self._started("retriever", run_id, parent_run_id, name, metadata, tags, query if self._capture else None)

    @guard
    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, None, len(documents) if documents is not None else 0)

    @guard
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id, error)

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
