"""The LLM-call hooks: a model call's start, its first token, its end; and a stop budget's part of them.

A mixin of :class:`~vital_callbacks.capture.handler.VitalCallbackHandler`, which owns the recording
(``_started``, ``_ended``). A model call is where the hot path may have to do more than record: under
a stop budget, the reservation is made before the call (it may refuse it) and the price is read at
its end, on the caller's thread, so the next call already sees the spend. For that, and only then,
the handler keeps each open run's tenant, user and graph here (the run tree itself is the
dispatcher's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from vital_callbacks.budgets import BudgetExceeded, BudgetGuard
from vital_callbacks.budgets.estimate import worst_case
from vital_callbacks.capture.assemble import TOKEN, Assembler
from vital_callbacks.capture.runs import Run, error_fields, forget_oldest, guard, provider_of
from vital_callbacks.capture.tree import is_wrapper
from vital_callbacks.core import attribution
from vital_callbacks.core.attribution import Attribution
from vital_callbacks.core.events import PRICED, READING, Cost, Status
from vital_callbacks.core.settings import Settings
from vital_callbacks.providers.shims import install as install_shim
from vital_callbacks.providers.usage import ResultSnapshot, as_snapshot, capture, read

if TYPE_CHECKING:
    from vital_callbacks.pricing.book import PriceBook

BudgetScope = tuple[str | None, str | None, str | None]
"""What a reservation is counted against: tenant, user, graph."""
_STREAMED_KEPT = 10_000
"""Calls remembered as streaming (a cancelled stream sends no end): past this, the set starts again."""


def _spent(cost: object, run: Run, status: Status, streamed: bool) -> Decimal | None:
    """What a call under a stop budget spent, for its reservation: its price; the reservation itself
    (its worst case) when it succeeded or streamed tokens without a price this thread could compute (no
    usage reported: never counted as free); ``None`` (released) for a call that failed before any output."""
    if isinstance(cost, Cost):
        return cost.total
    if status == "success" or streamed:
        return max((claim.amount for claim in run.reservation.claims), default=None)
    return None


class LLMHooks:
    """Chat- and completion-model callbacks (see the module's docstring)."""

    _submit: Callable[[Any], bool]
    _assembler: Assembler
    _stop_budgets: bool
    _prices: PriceBook
    _budget_scope: tuple[int, ...]
    _defaults: Attribution
    _streamed: set[UUID]
    _scopes: dict[UUID, BudgetScope]
    _calls: dict[UUID, Run]
    budgets: BudgetGuard
    settings: Settings

    if TYPE_CHECKING:  # the handler's recording
        def _started(self, kind: str, run_id: UUID, parent_run_id: UUID | None, name: str,
                     metadata: Mapping[str, Any] | None, tags: list[str] | None, payload: object = None) -> None: ...

        def _ended(self, run_id: UUID, error: BaseException | None = None, payload: object = None) -> None: ...

    @guard
    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[Any]], *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._start_llm(serialized, messages, run_id, parent_run_id, tags, metadata, kwargs)

    @guard
    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._start_llm(serialized, prompts, run_id, parent_run_id, tags, metadata, kwargs)

    def _start_llm(self, serialized: dict[str, Any] | None, raw_input: object, run_id: UUID,
                   parent_run_id: UUID | None, tags: list[str] | None, metadata: Mapping[str, Any] | None,
                   kwargs: Mapping[str, Any]) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "llm"
        params = kwargs.get("invocation_params")
        install_shim(provider_of(metadata or {}, params or {}))  # before the response is converted
        self._started("llm", run_id, parent_run_id, name, metadata, tags,
                      (threading.get_ident(), params, serialized, raw_input))
        if self._stop_budgets:
            self._check_budget(run_id, name, metadata, params, serialized, raw_input)

    @guard
    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if run_id not in self._streamed:  # the first token only: one record per call
            if len(self._streamed) >= _STREAMED_KEPT:
                self._streamed.clear()
            self._streamed.add(run_id)
            self._submit((self._assembler, TOKEN, run_id, time.perf_counter()))

    @guard
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_llm(run_id, response, None)

    @guard
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_llm(run_id, kwargs.get("response"), error)

    def _end_llm(self, run_id: UUID, response: Any, error: BaseException | None) -> None:
        output, llm_output = capture(response)
        priced = None
        if self._stop_budgets and run_id in self._calls:
            status: Status = "success" if error is None else error_fields(error)[0]
            try:
                priced = self._settle(run_id, output, llm_output, status)
            finally:
                self._ended(run_id, error, (output, llm_output, priced))
        else:
            self._ended(run_id, error, (output, llm_output, None))
        self._streamed.discard(run_id)

    # -- a stop budget's part, on this thread ---------------------------------------------------------
    def _scope_run(self, run_id: UUID, parent_run_id: UUID | None, kind: str, name: str,
                   metadata: Mapping[str, Any] | None, enclosing: UUID | None) -> None:
        """Remember the tenant, user and graph a run's calls are reserved against (its root's)."""
        scopes = self._scopes
        parent = scopes.get(parent_run_id if parent_run_id is not None else enclosing)  # type: ignore[arg-type]
        if parent is None:
            attr = attribution.from_metadata(metadata).merged_over(attribution.current()).merged_over(self._defaults)
            in_node = kind != "chain" and bool(metadata) and isinstance(metadata.get("langgraph_node"), str)  # type: ignore[union-attr]
            parent = (attr.tenant_id, attr.user_id, attr.agent_id if in_node else attr.agent_id or name)
        elif parent[2] is not None and is_wrapper(parent[2]):
            parent = (parent[0], parent[1], name)  # the graph the fallbacks wrap, as the trace is named
        scopes[run_id] = parent
        if len(scopes) > self.settings.max_open_runs:
            forget_oldest(scopes, self.settings.max_open_runs)  # runs that never ended (a cancelled ainvoke)

    def _check_budget(self, run_id: UUID, name: str, metadata: Mapping[str, Any] | None,
                      params: Mapping[str, Any] | None, serialized: Mapping[str, Any] | None,
                      raw_input: object) -> None:
        tenant, user, graph = self._scopes.get(run_id, (None, None, None))
        run = Run("llm", str(run_id), name, time.time(), 0.0)
        run.read_model_params(metadata or {}, params or {}, serialized)
        run.attr = Attribution(tenant, user)
        run.graph = graph
        try:
            amount = worst_case(self._prices, run.provider, run.model, raw_input, run.max_tokens,
                                self.settings.budget_default_max_tokens)
            run.reservation = self.budgets.reserve(tenant, user, graph, amount, self._budget_scope)
        except BudgetExceeded as exc:
            self._ended(run_id, exc)  # LangChain sends no end for a run whose start raised
            raise
        self._calls[run_id] = run
        if len(self._calls) > self.settings.max_open_runs:
            forget_oldest(self._calls, self.settings.max_open_runs)  # its reservation expires by itself

    def _settle(self, run_id: UUID, output: object, llm_output: Mapping[str, Any] | None,
                status: Status) -> dict[str, Any] | None:
        """Price a call that ended and settle its reservation with what it spent."""
        run = self._calls.pop(run_id)
        fields: dict[str, Any] = {}
        if status == "success":
            result = as_snapshot(output, llm_output)
            if result is not None:
                fields = self._price_now(run, result)
        if run.reservation is not None:
            self.budgets.settle(run.reservation, _spent(fields.get("cost"), run, status, run_id in self._streamed))
        return fields or None

    def _price_now(self, run: Run, result: ResultSnapshot) -> dict[str, Any]:
        """Price on the caller's thread, only under a stop budget, so the next call already sees it.
        The worker then uses this reading and price instead of doing both again."""
        reading = read(result, run.provider)
        fields: dict[str, Any] = {READING: reading}
        usage = reading.usage
        if usage is None or reading.cache_hit:
            return fields  # nothing to price here; the worker does the rest (a hit's saved cost)
        cost = self._prices.price(run.provider, reading.model or run.model, usage, run.start_wall,
                                  service_tier=reading.service_tier, parts=reading.parts)
        fields.update({PRICED: True, "usage": usage, "token_source": "provider", "cost": cost})
        if cost is not None:
            self.budgets.record(run.attr.tenant_id, run.attr.user_id, run.graph, cost.total, run.run_id)
        return fields
