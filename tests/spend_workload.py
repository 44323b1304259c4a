"""A realistic month of agent traffic with priced and unpriced models, for every surface that shows cost.

Real LangGraph agents with the fake chat models of :mod:`vital_callbacks.testing.fakes` run through the
real handler into an in-memory sink; each trace is then moved to its place in a four-week window
(keeping its tree and timing, with durations stretched to a provider's seconds), so the store holds
days, hours and whole-day rollups like production does. What it holds:

* ``acme``: priced models (``gpt-4o-mini`` triage, ``claude-sonnet-4-5`` answers), and a share of answers
  on ``my-private-model-x``, which no price list knows: acme's cost is a lower bound;
* ``globex``: everything on ``my-private-model-x`` (self-hosted): nothing of it can be priced;
* ``initech``: priced only (``gpt-4o``), asking the same questions often (response-cache hits) and
  reusing a long system prompt (provider prompt-cache reads);
* a ``research_agent`` graph with a tool fan-out next to the ``support_agent``;
* failed calls without usage (``token_source = "none"``): neither priced nor unpriced.

The expected numbers of each test are computed from :attr:`Workload.events` in Python, independently
of the SQL the analytics run.
"""

from __future__ import annotations

import contextlib
import operator
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, TypedDict

import msgspec
from langchain_core.caches import InMemoryCache
from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler
from vital_callbacks.core.events import Event, GraphRun, LLMCall
from vital_callbacks.sinks.base import Sink
from vital_callbacks.testing.fakes import ScriptedChatModel, StaticRetriever

UNKNOWN_MODEL = "my-private-model-x"
TENANTS = ("acme", "globex", "initech")
STRETCH = 150.0
"""Fake calls take milliseconds; stretched so latency figures read like a provider's seconds."""


class SupportState(TypedDict, total=False):
    question: str
    docs: list[str]
    intent: str
    facts: str
    answer: str


class ResearchState(TypedDict, total=False):
    question: str
    topic: str
    notes: Annotated[list[str], operator.add]
    report: str


@tool
def search_kb(query: str) -> str:
    """Search the help-centre articles."""
    return f"articles about {query}"


@tool
def billing_lookup(account: str) -> str:
    """Look an account's invoices up."""
    return f"invoices of {account}"


@tool
def web_fetch(topic: str) -> str:
    """Fetch a page about a topic."""
    return f"page about {topic}"


def _usage(rng: random.Random, low: int, high: int, out_low: int, out_high: int,
           cache_read: int = 0) -> UsageMetadata:
    inp, out = rng.randint(low, high), rng.randint(out_low, out_high)
    usage = UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)
    if cache_read:
        usage["input_token_details"] = {"cache_read": min(cache_read, inp)}
    return usage


def _model(name: str, provider: str, usage: UsageMetadata, rng: random.Random, *, slow: bool = False,
           fail: bool = False, cache: InMemoryCache | None = None) -> ScriptedChatModel:
    latency = rng.uniform(0.006, 0.02) if slow else rng.uniform(0.001, 0.004)
    return ScriptedChatModel(model_name=name, provider=provider, usage=usage, latency_s=latency,
                             responses=["Here is what I found."], fail_with="upstream 503" if fail else None,
                             cache=cache if cache is not None else False)


def _support_graph(tenant: str, rng: random.Random, cache: InMemoryCache) -> Any:
    if tenant == "globex":
        triage = _model(UNKNOWN_MODEL, "vllm", _usage(rng, 300, 900, 10, 40), rng)
        answer_name, answer_provider = UNKNOWN_MODEL, "vllm"
    elif tenant == "acme":
        triage = _model("gpt-4o-mini", "openai", _usage(rng, 300, 900, 10, 40), rng)
        answer_name, answer_provider = (UNKNOWN_MODEL, "vllm") if rng.random() < 0.3 else ("claude-sonnet-4-5",
                                                                                            "anthropic")
    else:
        triage = _model("gpt-4o-mini", "openai", _usage(rng, 1500, 2500, 10, 40, cache_read=1024), rng)
        answer_name, answer_provider = "gpt-4o", "openai"
    answer = _model(answer_name, answer_provider, _usage(rng, 1500, 6000, 150, 700), rng, slow=True,
                    fail=rng.random() < 0.06, cache=cache if tenant == "initech" else None)
    retriever = StaticRetriever(documents=["Refunds take 5 days.", "Plans can change monthly."], k=2)

    def retrieve(state: SupportState) -> SupportState:
        return {"docs": [d.page_content for d in retriever.invoke(state["question"])]}

    def classify(state: SupportState) -> SupportState:
        return {"intent": str(triage.invoke(f"classify: {state['question']}").content)}

    def lookup(state: SupportState) -> SupportState:
        facts = search_kb.invoke({"query": state["question"]})
        if "invoice" in state["question"]:
            facts += "; " + billing_lookup.invoke({"account": tenant})
        return {"facts": facts}

    def respond(state: SupportState) -> SupportState:
        return {"answer": str(answer.invoke(f"answer {state['question']} using {state['facts']}").content)}

    g = StateGraph(SupportState)
    for name, fn in (("retrieve", retrieve), ("classify", classify), ("lookup", lookup), ("respond", respond)):
        g.add_node(name, fn)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "classify")
    g.add_edge("classify", "lookup")
    g.add_edge("lookup", "respond")
    g.add_edge("respond", END)
    return g.compile(name="support_agent")


def _research_graph(tenant: str, rng: random.Random) -> Any:
    name, provider = (UNKNOWN_MODEL, "vllm") if tenant == "globex" else ("gpt-4o", "openai")
    planner = _model(name, provider, _usage(rng, 800, 1600, 100, 300), rng)
    writer = _model(name, provider, _usage(rng, 4000, 12000, 600, 1500), rng, slow=True)

    def plan(state: ResearchState) -> ResearchState:
        return {"topic": str(planner.invoke(f"plan {state['question']}").content)}

    def fan_out(state: ResearchState) -> list[Send]:
        return [Send("fetch", {"topic": f"{state['question']}-{i}"}) for i in range(rng.randint(2, 4))]

    def fetch(state: ResearchState) -> dict[str, Any]:
        return {"notes": [web_fetch.invoke({"topic": state["topic"]})]}

    def write(state: ResearchState) -> ResearchState:
        return {"report": str(writer.invoke("write " + "; ".join(state.get("notes", []))).content)}

    g = StateGraph(ResearchState)
    g.add_node("plan", plan)
    g.add_node("fetch", fetch)
    g.add_node("write", write)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["fetch"])
    g.add_edge("fetch", "write")
    g.add_edge("write", END)
    return g.compile(name="research_agent")


QUESTIONS = ("where is my invoice", "how do I change plan", "refund status", "reset password", "export data")


@dataclass
class Workload:
    events: list[Event]
    end: datetime
    """The newest trace starts before this instant; the oldest four weeks earlier."""

    def llm_calls(self, where: Callable[[LLMCall], bool] = lambda c: True) -> list[LLMCall]:
        return [e for e in self.events if isinstance(e, LLMCall) and where(e)]

    def graph_runs(self) -> list[GraphRun]:
        return [e for e in self.events if isinstance(e, GraphRun) and e.parent_run_id is None]

    def expected(self, where: Callable[[LLMCall], bool] = lambda c: True) -> Spend:
        """Calls, priced cost and unpriced calls of the matching LLM calls, summed here in Python."""
        return spend_of(self.llm_calls(where))

    def store(self, sink: Sink) -> None:
        sink.export(self.events)


@dataclass(frozen=True)
class Spend:
    calls: int
    priced_usd: Decimal | None
    """Sum of the priced calls; None when none of them was priced."""
    priced_calls: int
    unpriced_calls: int
    failed_without_usage: int


def spend_of(calls: Iterable[LLMCall]) -> Spend:
    listed = list(calls)
    priced = [c for c in listed if c.cost is not None]
    return Spend(len(listed), sum((c.cost.total for c in priced if c.cost), Decimal(0)) if priced else None,
                 len(priced), sum(1 for c in listed if c.cost is None and c.token_source != "none"),
                 sum(1 for c in listed if c.token_source == "none"))


def _moved(events: list[Event], to: float) -> list[Event]:
    """One trace's events moved to start at ``to``, its timeline stretched by :data:`STRETCH`."""
    origin = min(e.start_time for e in events)

    def at(ts: float) -> float:
        return to + (ts - origin) * STRETCH

    out: list[Event] = []
    for e in events:
        changes: dict[str, Any] = {"start_time": at(e.start_time), "end_time": at(e.end_time),
                                   "duration_s": e.duration_s * STRETCH}
        if isinstance(e, LLMCall) and e.time_to_first_token_s is not None:
            changes["time_to_first_token_s"] = e.time_to_first_token_s * STRETCH
        out.append(msgspec.structs.replace(e, **changes))
    return out


def generate(runs: int = 160, *, end: datetime | None = None, seed: int = 7) -> Workload:
    """``runs`` graph runs over the four weeks before ``end`` (default: now), traffic growing over time."""
    end = end or datetime.now(timezone.utc)
    rng = random.Random(seed)
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, queue_size=100_000), sinks=[memory])
    cache = InMemoryCache()
    try:
        for i in range(runs):
            tenant = rng.choices(TENANTS, weights=(5, 3, 4))[0]
            question = rng.choice(QUESTIONS) if tenant == "initech" else f"{rng.choice(QUESTIONS)} #{i}"
            research = rng.random() < 0.2
            graph = _research_graph(tenant, rng) if research else _support_graph(tenant, rng, cache)
            config = {"callbacks": [handler], "metadata": {"tenant_id": tenant, "user_id": f"{tenant}-u{i % 5}",
                                                           "session_id": f"s{i // 3}"}}
            with contextlib.suppress(RuntimeError):  # a provider failure the agent did not handle: an error run
                graph.invoke({"question": question}, config=config)
        assert handler.flush(60), "the workload's events did not reach the in-memory sink"
    finally:
        handler.shutdown()
    traces: dict[str, list[Event]] = {}
    for event in memory.events:
        traces.setdefault(event.trace_id, []).append(event)
    start = end - timedelta(days=28)
    moved: list[Event] = []
    for events in traces.values():
        # Growing traffic: later days are likelier (a power below 1 bends the uniform draw towards the end).
        offset = timedelta(days=28) * (rng.random() ** 0.6)
        when = min(start + offset, end - timedelta(minutes=30))
        moved.extend(_moved(events, when.timestamp()))
    moved.sort(key=lambda e: e.start_time)
    return Workload(moved, end)


__all__ = ["TENANTS", "UNKNOWN_MODEL", "Spend", "Workload", "generate", "spend_of"]
