"""The LLM-call hooks: a model call's start (its budget reservation), its tokens, its end.

A mixin of :class:`~vital_callbacks.capture.handler.VitalCallbackHandler`, which owns the run map and the
fields every event has (``_open``, ``_close``, ``_base``); kept apart because a model call is where the
hot path does the most (a stop budget's reservation and price on the caller's thread).
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
from vital_callbacks.capture.runs import MAX_ERROR_CHARS, OpenRuns, Run, error_fields, guard
from vital_callbacks.core.events import (
    ENCLOSING_TOOLS,
    PRICED,
    RAW_LLM_OUTPUT,
    READING,
    Cost,
    Draft,
    Event,
    LLMCall,
    Status,
)
from vital_callbacks.core.settings import Settings
from vital_callbacks.providers.usage import ResultSnapshot, as_snapshot, capture, read

if TYPE_CHECKING:
    from vital_callbacks.pricing.book import PriceBook


def _spent(cost: object, run: Run, status: Status) -> Decimal | None:
    """What a call under a stop budget spent, for its reservation: its price; the reservation itself
    (its worst case) when it succeeded or streamed tokens without a price this thread could compute (no
    usage reported: never counted as free); ``None`` (released) for a call that failed before any output."""
    if isinstance(cost, Cost):
        return cost.total
    if status == "success" or run.first_token is not None:
        return max((claim.amount for claim in run.reservation.claims), default=None)
    return None


class LLMHooks:
    """Chat- and completion-model callbacks (see the module's docstring)."""

    _lock: threading.Lock
    _runs: OpenRuns
    _submit: Callable[[Event | Draft], None]
    _stop_budgets: bool
    _prices: PriceBook
    _budget_scope: tuple[int, ...]
    budgets: BudgetGuard
    settings: Settings

    if TYPE_CHECKING:  # the handler's run map and event fields
        def _open(self, kind: str, run_id: UUID, parent: Run | None, name: str,
                  metadata: Mapping[str, Any] | None, tags: list[str] | None) -> Run: ...

        def _parent(self, parent_run_id: UUID | None) -> Run | None: ...

        def _close(self, run_id: UUID) -> Run | None: ...

        def _base(self, run: Run, cls: type[Event], status: Status, error_type: str | None,
                  error_message: str | None) -> Draft: ...

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
        run = self._open("llm", run_id, self._parent(parent_run_id), name, metadata, tags)
        run.thread = threading.get_ident()
        run.read_model_params(metadata or {}, kwargs.get("invocation_params") or {}, serialized)
        run.raw_input = raw_input
        if self._stop_budgets:
            self._check_budget(run_id, run)

    def _check_budget(self, run_id: UUID, run: Run) -> None:
        try:
            amount = worst_case(self._prices, run.provider, run.model, run.raw_input, run.max_tokens,
                                self.settings.budget_default_max_tokens)
            run.reservation = self.budgets.reserve(run.attr.tenant_id, run.attr.user_id, run.graph, amount,
                                                   self._budget_scope)
        except BudgetExceeded as exc:
            self._close(run_id)  # LangChain will send no end for a run whose start raised
            refused = self._base(run, LLMCall, "error", "BudgetExceeded", str(exc)[:MAX_ERROR_CHARS])
            refused.update(provider=run.provider, model=run.model, requested_model=run.model, token_source="none")
            self._submit_call(run, refused)
            raise

    @guard
    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.first_token is None:
            run.first_token = time.perf_counter()

    @guard
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_llm(run_id, response, "success", None, None)

    @guard
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_llm(run_id, kwargs.get("response"), *error_fields(error))

    def _end_llm(self, run_id: UUID, response: Any, status: Status, error_type: str | None,
                 error_message: str | None) -> None:
        run = self._close(run_id)
        if run is None:
            return
        try:
            fields = self._call_fields(run, response, status, error_type, error_message)
        except Exception:
            self._submit_call(run, None)  # its root must not wait for it
            raise
        self._submit_call(run, fields)

    def _call_fields(self, run: Run, response: Any, status: Status, error_type: str | None,
                     error_message: str | None) -> Draft:
        ttft = run.first_token - run.start_perf if run.first_token is not None else None
        output, llm_output = capture(response)
        fields = self._base(run, LLMCall, status, error_type, error_message)
        if self._stop_budgets and status == "success":
            result = as_snapshot(output, llm_output)
            if result is not None:
                fields.update(self._price_now(run, result))
        if run.reservation is not None:
            self.budgets.settle(run.reservation, _spent(fields.get("cost"), run, status))
        fields.setdefault("token_source", "none")
        fields["provider"] = run.provider
        fields["model"] = fields["requested_model"] = run.model
        fields["temperature"] = run.params_temperature
        fields["max_tokens"] = run.max_tokens
        fields["time_to_first_token_s"] = ttft
        fields["streamed"] = ttft is not None
        fields["raw_input"] = run.raw_input
        fields["raw_output"] = output
        fields["tool"] = run.tool
        if run.tool_ids:
            fields[ENCLOSING_TOOLS] = run.tool_ids
        if llm_output is not None:
            fields[RAW_LLM_OUTPUT] = llm_output
        return fields

    def _submit_call(self, run: Run, fields: Draft | None) -> None:
        """An LLM call's draft (``None``: none could be built), queued ahead of its root's if the root
        has not ended (the lock): a root that ends first says how many of its calls still run on other
        threads, and the worker waits for them."""
        root = run.root
        if root is None:
            if fields is not None:
                self._submit(fields)
            return
        with self._lock:
            root.open_calls -= 1
            if fields is not None:
                self._submit(fields)

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
