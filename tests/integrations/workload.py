"""The demo workload the Prometheus tests record: the reference graph for several tenants, with errors.

Each round runs, per tenant, a plain invoke, a streamed run (so time-to-first-token is recorded),
a run whose plan model answers from LangChain's response cache after the first round, a run whose
draft model is not in any price list (an unpriced call) and a run whose draft model fails (error rows
for the call, its nodes and the graph), so every dashboard panel has something to show.
"""

from __future__ import annotations

from typing import Any

from langchain_core.caches import InMemoryCache

from tests.graphs import DRAFT_USAGE, INPUT, PLAN_USAGE, build_graph
from vital_callbacks import VitalCallbackHandler
from vital_callbacks.testing.fakes import ScriptedChatModel

TENANTS = ("acme", "globex", "initech")
UNPRICED_MODEL = "in-house-llm-7b"


class Workload:
    """Graphs built once (the cached model keeps its cache across rounds)."""

    def __init__(self) -> None:
        cached_plan = ScriptedChatModel(model_name="o3-mini", provider="openai", responses=["a b c"],
                                        usage=PLAN_USAGE, cache=InMemoryCache())
        unpriced = ScriptedChatModel(model_name=UNPRICED_MODEL, provider="selfhosted", responses=["ok"],
                                     usage=DRAFT_USAGE)
        broken = ScriptedChatModel(model_name="claude-sonnet-4-5", provider="anthropic",
                                   fail_with="provider exploded")
        self.plain = build_graph()
        self.cached = build_graph(plan_model=cached_plan)
        self.unpriced = build_graph(draft_model=unpriced)
        self.broken = build_graph(draft_model=broken)
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
