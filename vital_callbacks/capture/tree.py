"""Where a run sits: its recorded parent when LangChain names none, its own tags, the application's span.

Kept apart from the hooks: these are the answers to "whose child is this run?" that LangChain's
callback arguments alone do not give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.runnables.config import var_child_runnable_config

from vital_callbacks.capture.runs import Run

_INTERNAL_TAG_PREFIXES = ("seq:step:", "graph:step:", "langsmith:")
"""Tags LangChain and LangGraph add for their own bookkeeping: not the user's."""

_WRAPPER_NAMES = frozenset({"RunnableWithFallbacks"})
"""Roots that only wrap their attempts: the trace takes the first attempt's name (the graph's)."""
_DEFAULT_GRAPH_NAME = "LangGraph"
"""What ``StateGraph.compile()`` names a graph that was given no name."""


def own_tags(tags: Sequence[str] | None) -> tuple[str, ...]:
    if not tags:
        return ()
    return tuple(t for t in tags if isinstance(t, str) and not t.startswith(_INTERNAL_TAG_PREFIXES))


def context_parent() -> UUID | None:
    """The run that encloses one LangChain started without a parent, from the runnable context.

    ``RunnableWithFallbacks`` starts each attempt with the *parent's* config (langchain-core passes
    ``config``, not the child config it built), so every attempt arrives as a root of its own: three
    traces for one request, one of them a false error. The child config it did build is in the context
    (``var_child_runnable_config``), and its callback manager names the enclosing run. The same holds
    for a graph invoked inside a node with an explicit ``config={"callbacks": [...]}``: it is that
    node's child. One context-variable read, at root starts only."""
    config = var_child_runnable_config.get()
    if not config:
        return None
    parent = getattr(config.get("callbacks"), "parent_run_id", None)
    return parent if isinstance(parent, UUID) else None


def names_node(metadata: Mapping[str, Any] | None, name: str) -> bool:
    """Whether a chain is LangGraph's run of a node: its metadata names it as the node (else it is an
    internal step of one, which has no row; the dispatcher also tells a subgraph's inner root apart)."""
    return metadata is not None and metadata.get("langgraph_node") == name


def has_row(kind: str, is_root: bool, metadata: Mapping[str, Any] | None, name: str) -> bool:
    """Whether a run gets an event of its own: an LLM call, a tool or retriever run, a trace's root
    (its graph run), a chain LangGraph runs as a node; not a chain that is an internal step. What a
    refused or unreadable run counts as lost."""
    return kind != "chain" or is_root or names_node(metadata, name)


def is_wrapper(name: str) -> bool:
    return name in _WRAPPER_NAMES


_current_span: Callable[[], Any] | None = None


def app_traceparent() -> str | None:
    """The application's current OpenTelemetry span as a W3C ``traceparent`` (``None`` outside one),
    read when a trace starts, on the caller's thread, so the trace's spans can be its children even
    though they are built later, on the sink's thread. Only asked when an OTel sink is configured."""
    global _current_span
    if _current_span is None:
        from opentelemetry import trace

        _current_span = trace.get_current_span
    context = _current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def subgraph_of(pregel: Run) -> str | None:
    """The subgraph a node runs in (``pregel``: its LangChain parent, the graph's own run): a graph run
    inside another graph's node. Its compiled name, or, for one left with LangGraph's default name,
    the node it runs as in the enclosing graph; ``None`` at the trace's own graph (the root, or an
    attempt of the root's fallbacks, which runs in no node)."""
    if pregel.kind != "chain" or pregel.node is None:
        return pregel.subgraph
    return pregel.node if pregel.name == _DEFAULT_GRAPH_NAME else pregel.name
