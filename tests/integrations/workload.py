"""The demo workload the Prometheus tests record: the reference graph for several tenants, with errors.

Each round runs, per tenant, a plain invoke, a streamed run (so time-to-first-token is recorded),
a run whose plan model answers from LangChain's response cache after the first round and whose draft
model writes to and reads from the provider's prompt cache, a run whose draft model is not in any
price list (an unpriced call) and a run whose plan model hears and speaks audio and whose draft model
fails (error rows for the call, its nodes and the graph), so every dashboard panel has something to
show. With the plan model's reasoning, every token kind is non-zero.

:class:`LLMTally` is the account the metrics must add up to: a sink in the same pipeline that sums
what the recorded ``LLMCall`` events carry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from langchain_core.caches import InMemoryCache
from langchain_core.messages.ai import UsageMetadata

from tests.graphs import DRAFT_USAGE, INPUT, PLAN_USAGE, build_graph
from vital_callbacks import Event, ExportResult, LLMCall, Sink, TokenUsage, VitalCallbackHandler
from vital_callbacks.testing.fakes import ScriptedChatModel

TENANTS = ("acme", "globex", "initech")
UNPRICED_MODEL = "in-house-llm-7b"
PROMPT_CACHE_USAGE = UsageMetadata(
    input_tokens=1500, output_tokens=200, total_tokens=1700,
    input_token_details={"cache_read": 600, "cache_creation": 400},
)
"""Anthropic-style: part of the prompt read from the provider's cache, part written to it."""
AUDIO_USAGE = UsageMetadata(
    input_tokens=900, output_tokens=300, total_tokens=1200,
    input_token_details={"audio": 500, "cache_read": 200}, output_token_details={"audio": 250},
)
"""OpenAI audio model: audio in and out, and a text prefix read from the prompt cache."""


class Workload:
    """Graphs built once (the cached model keeps its cache across rounds)."""

    def __init__(self) -> None:
        cached_plan = ScriptedChatModel(model_name="o3-mini", provider="openai", responses=["a b c"],
                                        usage=PLAN_USAGE, cache=InMemoryCache())
        prompt_cached_draft = ScriptedChatModel(model_name="claude-sonnet-4-5", provider="anthropic",
                                                responses=["final answer"], usage=PROMPT_CACHE_USAGE)
        unpriced = ScriptedChatModel(model_name=UNPRICED_MODEL, provider="selfhosted", responses=["ok"],
                                     usage=DRAFT_USAGE)
        audio_plan = ScriptedChatModel(model_name="gpt-4o-audio-preview", provider="openai", responses=["a b c"],
                                       usage=AUDIO_USAGE)
        broken = ScriptedChatModel(model_name="claude-sonnet-4-5", provider="anthropic",
                                   fail_with="provider exploded")
        self.plain = build_graph()
        self.cached = build_graph(plan_model=cached_plan, draft_model=prompt_cached_draft)
        self.unpriced = build_graph(draft_model=unpriced)
        self.broken = build_graph(plan_model=audio_plan, draft_model=broken)
        self.errors = 0

    def round(self, handler: VitalCallbackHandler, tenants: tuple[str, ...] = TENANTS) -> None:
        for tenant in tenants:
            config: dict[str, Any] = {"callbacks": [handler],
                                      "metadata": {"tenant_id": tenant, "user_id": f"{tenant}-user"}}
            self.plain.invoke(INPUT, config=config)
            for _ in self.plain.stream(INPUT, config=config, stream_mode="messages"):
                pass
            self.cached.invoke(INPUT, config=config)
            self.unpriced.invoke(INPUT, config=config)
            try:
                self.broken.invoke(INPUT, config=config)
            except RuntimeError:
                self.errors += 1


@dataclass(frozen=True)
class Account:
    """What a set of LLM calls carried: their count, summed usage, priced cost and unpriced count."""

    calls: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Decimal = Decimal(0)
    unpriced: int = 0

    def __add__(self, other: Account) -> Account:
        return Account(self.calls + other.calls, self.usage + other.usage, self.cost + other.cost,
                       self.unpriced + other.unpriced)

    @property
    def tokens(self) -> int:
        return self.usage.input + self.usage.output


Group = tuple[str, str, str]
"""(provider, model, tenant), as the sink labels them."""


class LLMTally(Sink):
    """Sums the ``LLMCall`` events the pipeline delivers, per (provider, model, tenant)."""

    name = "tally"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[Group, Account] = {}

    def export(self, batch: Sequence[Event]) -> ExportResult:
        with self._lock:
            for event in batch:
                if isinstance(event, LLMCall):
                    key = (event.provider or "unknown", event.model or "unknown", event.tenant_id or "none")
                    cost = event.cost.total if event.cost else Decimal(0)
                    unpriced = int(event.cost is None and not event.usage.is_empty)
                    self._groups[key] = self._groups.get(key, Account()) + Account(1, event.usage, cost, unpriced)
        return ExportResult.SUCCESS

    def groups(self) -> Mapping[Group, Account]:
        with self._lock:
            return dict(self._groups)

    def total(self) -> Account:
        return sum(self.groups().values(), Account())
