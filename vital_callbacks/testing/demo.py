"""A sample LangGraph agent that runs fully offline, for `vital-callbacks demo`.

retrieve -> think (LLM) -> act (tool) -> 3 parallel critics (fan-out, LLM each) -> answer (LLM).
The chat models are deterministic stand-ins that report usage under real model names, so the
costs in the report are real catalog prices for made-up traffic.
"""

from __future__ import annotations

import operator
import random
from typing import Annotated, Any, TypedDict

from langchain_core.messages.ai import UsageMetadata
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from vital_callbacks.testing.fakes import ScriptedChatModel, StaticRetriever

TENANTS = ("acme", "globex", "initech")
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"))


class DemoState(TypedDict, total=False):
    question: str
    context: list[str]
    thought: str
    observation: str
    critiques: Annotated[list[str], operator.add]
    answer: str
    aspect: str


@tool
def calculator(expression: str) -> str:
    """Evaluate a small arithmetic expression of digits and + - * /."""
    allowed = set("0123456789+-*/ ().")
    if not set(expression) <= allowed:
        return "unsupported expression"
    return str(eval(expression, {"__builtins__": {}}, {}))


def _model(provider: str, name: str, seed: int, cached: bool) -> ScriptedChatModel:
    rng = random.Random(seed)
    inp = rng.randint(300, 3000)
    out = rng.randint(40, 600)
    usage = UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)
    if cached:
        usage["input_token_details"] = {"cache_read": inp // 2}
    return ScriptedChatModel(model_name=name, provider=provider, usage=usage, latency_s=rng.uniform(0.002, 0.02),
                             responses=["Let me compute 6 * 7.", "The answer is 42."])


def build_demo_graph(seed: int = 0) -> Any:
    """The demo agent; ``seed`` varies token counts and which model a run uses."""
    provider, name = MODELS[seed % len(MODELS)]
    llm = _model(provider, name, seed, cached=seed % 3 == 0)
    critic = _model(*MODELS[(seed + 1) % len(MODELS)], seed=seed + 7, cached=False)
    retriever = StaticRetriever(documents=["Costs are per million tokens.", "Caching halves input cost."], k=2)

    def retrieve(state: DemoState) -> DemoState:
        return {"context": [d.page_content for d in retriever.invoke(state["question"])]}

    def think(state: DemoState) -> DemoState:
        return {"thought": str(llm.invoke(f"{state['question']}\n{state['context']}").content)}

    def act(state: DemoState) -> DemoState:
        return {"observation": calculator.invoke({"expression": "6 * 7"})}

    def fan_out(state: DemoState) -> list[Send]:
        return [Send("critique", {"aspect": aspect, "observation": state["observation"]})
                for aspect in ("accuracy", "tone", "cost")]

    def critique(state: DemoState) -> DemoState:
        return {"critiques": [str(critic.invoke(f"critique {state['aspect']}").content)]}

    def answer(state: DemoState) -> DemoState:
        return {"answer": str(llm.invoke(f"answer using {state['observation']}").content)}

    g = StateGraph(DemoState)
    for node_name, fn in (("retrieve", retrieve), ("think", think), ("act", act), ("critique", critique),
                          ("answer", answer)):
        g.add_node(node_name, fn)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "think")
    g.add_edge("think", "act")
    g.add_conditional_edges("act", fan_out, ["critique"])
    g.add_edge("critique", "answer")
    g.add_edge("answer", END)
    return g.compile(name="demo_agent")


def run_demo(handler: Any, runs: int = 30) -> None:
    """Invoke the demo agent ``runs`` times across three tenants."""
    for i in range(runs):
        tenant = TENANTS[i % len(TENANTS)]
        build_demo_graph(seed=i).invoke(
            {"question": "What is 6 * 7?"},
            config={"callbacks": [handler],
                    "metadata": {"tenant_id": tenant, "user_id": f"{tenant}-user-{i % 4}", "session_id": f"s{i}"}},
        )
