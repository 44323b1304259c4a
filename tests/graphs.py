"""The reference workflow every test suite runs: real LangGraph, fake LLM.

retrieve (retriever) -> plan (LLM, reports cache-read and reasoning tokens)
  -> research x3 (Send fan-out; each calls a tool) -> summarize (a nested subgraph whose node
  `draft` calls a second model) -> END
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from vital_callbacks.testing.fakes import ScriptedChatModel, StaticRetriever

PLAN_USAGE = UsageMetadata(
    input_tokens=1200, output_tokens=350, total_tokens=1550,
    input_token_details={"cache_read": 1024}, output_token_details={"reasoning": 256},
)
DRAFT_USAGE = UsageMetadata(input_tokens=400, output_tokens=120, total_tokens=520)
FANOUT = 3


class State(TypedDict, total=False):
    question: str
    docs: list[str]
    plan: str
    findings: Annotated[list[str], operator.add]
    answer: str


class DraftState(TypedDict, total=False):
    findings: list[str]
    answer: str


class DraftOutput(TypedDict, total=False):
    answer: str


@tool
def lookup(topic: str) -> str:
    """Look a topic up in the fake knowledge base."""
    return f"facts about {topic}"


def build_graph(*, plan_model: ScriptedChatModel | None = None, draft_model: ScriptedChatModel | None = None,
                retriever: StaticRetriever | None = None) -> Any:
    plan_llm = plan_model or ScriptedChatModel(model_name="o3-mini", provider="openai",
                                               responses=["a b c"], usage=PLAN_USAGE)
    draft_llm = draft_model or ScriptedChatModel(model_name="claude-sonnet-4-5", provider="anthropic",
                                                 responses=["final answer"], usage=DRAFT_USAGE)
    docs = retriever or StaticRetriever(documents=["d1", "d2"], k=2)

    def retrieve(state: State) -> State:
        return {"docs": [d.page_content for d in docs.invoke(state["question"])]}

    def plan(state: State) -> State:
        return {"plan": str(plan_llm.invoke(f"plan for {state['question']}").content)}

    def fan_out(state: State) -> list[Send]:
        return [Send("research", {"plan": f"topic-{i}"}) for i in range(FANOUT)]

    def research(state: State) -> State:
        return {"findings": [lookup.invoke({"topic": state["plan"]})]}

    def draft(state: DraftState) -> DraftState:
        return {"answer": str(draft_llm.invoke("; ".join(state["findings"])).content)}

    sub = StateGraph(DraftState, output_schema=DraftOutput)
    sub.add_node("draft", draft)
    sub.add_edge(START, "draft")
    sub.add_edge("draft", END)

    g = StateGraph(State)
    g.add_node("retrieve", retrieve)
    g.add_node("plan", plan)
    g.add_node("research", research)
    g.add_node("summarize", sub.compile())
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "plan")
    g.add_conditional_edges("plan", fan_out, ["research"])
    g.add_edge("research", "summarize")
    g.add_edge("summarize", END)
    return g.compile(name="research_agent")


INPUT = {"question": "what does it cost?"}
METADATA = {"tenant_id": "acme", "user_id": "u1", "session_id": "s1"}
