"""The hot path's memory of an open run, and the small conversions the hooks share.

Kept apart from :mod:`vital_callbacks.capture.handler` so the handler module is only the hooks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

from langgraph.errors import GraphBubbleUp, GraphInterrupt

from vital_callbacks.budgets import BudgetExceeded
from vital_callbacks.core import attribution
from vital_callbacks.core.events import Status
from vital_callbacks.providers.billing import api_base, provider_for

logger = logging.getLogger("vital_callbacks")

MAX_ERROR_CHARS = 2000
F = TypeVar("F", bound=Callable[..., Any])


class Run:
    """What the dispatcher remembers about an open run (freed when the run ends); under a stop budget,
    the caller's thread keeps one for each LLM call too (its reservation and price)."""

    __slots__ = (
        "attr",
        "checkpoint_ns",
        "first_token",
        "graph",
        "interrupts",
        "kind",
        "max_tokens",
        "model",
        "name",
        "node",
        "node_ns",
        "open_calls",
        "params_temperature",
        "provider",
        "raw_input",
        "record_id",
        "reservation",
        "resumed",
        "root",
        "run_id",
        "start_perf",
        "start_wall",
        "step",
        "subgraph",
        "tags",
        "thread",
        "thread_id",
        "tool",
        "tool_ids",
        "trace_id",
        "traceparent",
        "user_metadata",
    )

    def __init__(self, kind: str, run_id: str, name: str, wall: float, perf: float) -> None:
        self.kind = kind
        self.run_id = run_id
        self.name = name
        self.start_wall = wall
        self.start_perf = perf
        self.record_id: str | None = None
        self.trace_id = run_id
        self.root: Run | None = None
        """The trace's root run; ``None`` for a root itself (no self-reference for the GC to chase)."""
        self.attr = attribution.EMPTY
        self.graph: str | None = None
        self.node: str | None = None
        self.node_ns: str | None = None
        self.subgraph: str | None = None
        """The subgraph this run executes in, when it is not the trace's own graph."""
        self.traceparent: str | None = None
        """The application's OpenTelemetry span the trace started in (W3C ``traceparent``)."""
        self.open_calls = 0
        """For a root: its LLM calls not yet ended."""
        self.thread = 0
        """For an LLM call: the thread it started on."""
        self.tool: str | None = None
        """The nearest tool this run executes in (an LLM call inside a tool is that tool's)."""
        self.user_metadata: Mapping[str, Any] | None = None
        """The run's metadata as LangChain passed it (a reference: the worker picks the app's keys)."""
        self.thread_id: str | None = None
        self.tool_ids: tuple[str, ...] = ()
        """The run ids of every tool this run executes in, innermost last: their totals include it."""
        self.tags: tuple[str, ...] = ()
        self.step: int | None = None
        self.checkpoint_ns: str | None = None
        self.first_token: float | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.params_temperature: float | None = None
        self.max_tokens: int | None = None
        self.reservation: Any = None
        """A stop budget's reservation for this LLM call, settled when it ends."""
        self.raw_input: object = None
        self.interrupts = 0
        self.resumed = False

    def read_model_params(self, md: Mapping[str, Any], params: Mapping[str, Any],
                          serialized: Mapping[str, Any] | None = None) -> None:
        """Provider, model, temperature and max tokens of an LLM run: LangChain's ``ls_*`` metadata first,
        then the model's invocation params (names differ between integrations). The provider is the
        one the request went to: ``ChatOpenAI(base_url=<OpenRouter>)`` is OpenRouter, not OpenAI."""
        self.provider = provider_of(md, params)
        base = api_base(serialized.get("kwargs") if serialized else None)
        if base is not None:
            self.provider = provider_for(self.provider, base)
        model = md.get("ls_model_name") or params.get("model") or params.get("model_name") or params.get("model_id")
        self.model = model if isinstance(model, str) else None
        self.params_temperature = number(md.get("ls_temperature", params.get("temperature")))
        max_tokens = md.get("ls_max_tokens") or params.get("max_tokens") or params.get("max_completion_tokens")
        self.max_tokens = max_tokens if isinstance(max_tokens, int) else None

    def child_parent_id(self) -> str | None:
        """The id a child event names as its parent: ours if we get a row, else our own parent's."""
        return self.run_id if self.kind in ("graph", "node", "tool") else self.record_id


_SWEEP_EVERY = 1024
"""Opens between two looks for runs past their timeout (the count bound is checked at every open)."""


class OpenRuns(dict[UUID, Run]):
    """A handler's open runs, in start order, bounded: LangChain sends no end callback for a cancelled
    ``ainvoke`` (nor for a run whose stream of callbacks was cut), so such runs would stay forever. The
    oldest go first: past ``max_open``, or open longer than ``timeout_s``. Their children are still
    recorded (as roots of their own, once their parent is gone). Used by the dispatcher thread only."""

    def __init__(self, max_open: int, timeout_s: float) -> None:
        super().__init__()
        self.max_open = max_open
        self.timeout_s = timeout_s
        self.evicted = 0
        self._opened = 0

    def add(self, run_id: UUID, run: Run) -> None:
        self[run_id] = run
        if run.kind == "llm" and run.root is not None:
            run.root.open_calls += 1
        self._opened += 1
        if self._opened % _SWEEP_EVERY == 0 or len(self) > self.max_open:
            self._forget_stale()

    def running_elsewhere(self, root: Run, here: int | None) -> int:
        """The open LLM calls of ``root``'s trace started on other threads than ``here`` (the one its
        end came from). Only those can still end: a call on that thread, open when its root ends, was
        cancelled with it (an ``await`` cut short sends no end callback); one in a worker thread
        (``asyncio.to_thread``, a sync graph's parallel branch) runs on. Asked only when some are open."""
        return sum(1 for run in self.values() if run.root is root and run.kind == "llm" and run.thread != here)

    def _forget_stale(self) -> None:
        cutoff = time.perf_counter() - self.timeout_s
        forgotten = 0
        while self:
            run_id, run = next(iter(self.items()))
            if len(self) <= self.max_open and run.start_perf >= cutoff:
                break
            del self[run_id]
            if run.kind == "llm" and run.root is not None:
                run.root.open_calls -= 1  # its end will never come: its root need not wait for it
            forgotten += 1
        if forgotten:
            first = self.evicted == 0
            self.evicted += forgotten
            if first:
                logger.warning("vital-callbacks: %d runs never ended (no end callback, e.g. a cancelled ainvoke) "
                               "and were forgotten; stats()['evicted_runs'] counts them", forgotten)


def forget_oldest(table: dict[Any, Any], keep: int) -> None:
    """Drop the oldest entries of a dict the hooks share across threads, down to ``keep``. Another
    thread may change it meanwhile: a trim that loses that race is left to the next one."""
    try:
        while len(table) > keep:
            table.pop(next(iter(table)), None)
    except (RuntimeError, StopIteration):
        pass


def provider_of(md: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """The LangChain integration's provider name (``ls_provider``), before any ``base_url`` says more."""
    provider = md.get("ls_provider") or params.get("_type")
    return provider if isinstance(provider, str) else None


def error_fields(error: BaseException) -> tuple[Status, str | None, str | None]:
    if isinstance(error, GraphInterrupt):
        return "interrupted", None, None
    if isinstance(error, GraphBubbleUp):  # control flow (e.g. Command to a parent graph), not a failure
        return "success", None, None
    if isinstance(error, _CANCELLATIONS):  # the caller went away (a closed stream, a cancelled task)
        return "cancelled", type(error).__name__, None
    return "error", type(error).__name__, str(error)[:MAX_ERROR_CHARS]


_CANCELLATIONS = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def guard(fn: F) -> F:
    """The one place that keeps handler bugs and odd payloads out of the user's workflow: a hook that
    raises is reported to ``self._internal_error`` and returns ``None``."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except BudgetExceeded:
            raise  # the one deliberate exception: a stop budget the user configured
        except Exception as exc:
            self._internal_error(fn.__name__, exc)
            return None

    return wrapper  # type: ignore[return-value]


def score_fields(run: Run) -> tuple[str | None, ...]:
    """What a later score needs of a run, as a tuple of strings (which the GC stops tracking)."""
    return run.trace_id, run.attr.tenant_id, run.attr.user_id, run.attr.session_id, run.graph, run.node
