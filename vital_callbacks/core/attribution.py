"""Who a run is for: tenant, user, session (and tags), from metadata, a context, or env defaults.

Precedence, most specific first: the run's ``config["metadata"]``, then an enclosing
:func:`attribute` block, then ``VITAL_TENANT_ID`` / ``VITAL_USER_ID`` / ``VITAL_SESSION_ID``.
Resolved once at a trace's root and inherited by every child event.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("vital_callbacks")

# Metadata keys we read, including the ones Langfuse users already set.
_KEYS: dict[str, tuple[str, ...]] = {
    "tenant_id": ("tenant_id", "tenant", "vital_tenant_id"),
    "user_id": ("user_id", "langfuse_user_id", "vital_user_id"),
    "session_id": ("session_id", "langfuse_session_id", "thread_id", "vital_session_id"),
    "agent_id": ("agent_id", "vital_agent_id"),
}


@dataclass(frozen=True, slots=True)
class Attribution:
    tenant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None

    def merged_over(self, base: Attribution) -> Attribution:
        """Self's values where set, else ``base``'s."""
        if base is EMPTY or self is base:
            return self
        if self is EMPTY:
            return base
        return Attribution(
            self.tenant_id or base.tenant_id,
            self.user_id or base.user_id,
            self.session_id or base.session_id,
            self.agent_id or base.agent_id,
        )


EMPTY = Attribution()
_current: contextvars.ContextVar[Attribution] = contextvars.ContextVar("vital_attribution", default=EMPTY)


@contextmanager
def attribute(*, tenant_id: str | None = None, user_id: str | None = None, session_id: str | None = None,
              agent_id: str | None = None) -> Iterator[Attribution]:
    """Attribute every run started inside the block (unless its metadata says otherwise)."""
    new = Attribution(tenant_id, user_id, session_id, agent_id).merged_over(_current.get())
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)


def current() -> Attribution:
    return _current.get()


_warned_kinds: set[type[Any]] = set()


def _scalar(key: str, value: Any) -> str | None:
    """An id as text: strings as they are, numbers and UUIDs by ``str``; anything else (a dict, a list,
    an object, whose ``str`` is a repr, a memory address) is no id: ``None``, with one warning per type."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float, uuid.UUID)) and not isinstance(value, bool):
        return str(value)
    if type(value) not in _warned_kinds:
        _warned_kinds.add(type(value))
        logger.warning("vital-callbacks: metadata %r is a %s, not an id; the run is stored without it", key,
                       type(value).__name__)
    return None


def _first(metadata: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = metadata.get(key)
        if value is not None and value != "":
            return _scalar(key, value)
    return None


_TENANT, _USER, _SESSION, _AGENT = (_KEYS[k] for k in ("tenant_id", "user_id", "session_id", "agent_id"))


_ALL_KEYS = frozenset(key for keys in _KEYS.values() for key in keys)
_FIELD_OF = {key: name for name, keys in _KEYS.items() for key in keys}


def from_metadata(metadata: Mapping[str, Any] | None) -> Attribution:
    """Runs once per trace root, on the caller's thread: kept to plain lookups."""
    if not metadata:
        return EMPTY
    keys = metadata.keys()
    if keys.isdisjoint(_ALL_KEYS):  # decided in C; LangChain adds a dozen ls_* / langgraph_* keys
        return EMPTY
    present = keys & _ALL_KEYS
    if len(present) == 1:  # one key (a tenant, say): the common case, no search through the aliases
        key = present.pop()
        value = metadata[key]
        if value.__class__ is str and value:
            return Attribution(**{_FIELD_OF[key]: value})
    found = Attribution(_first(metadata, _TENANT), _first(metadata, _USER), _first(metadata, _SESSION),
                        _first(metadata, _AGENT))
    return EMPTY if found == EMPTY else found


_FRAMEWORK_PREFIXES = ("ls_", "langgraph_", "checkpoint_", "lc_", "langfuse_", "vital_")
_FRAMEWORK_KEYS = frozenset({"thread_id", "checkpoint_ns", "checkpoint_id", "run_name", "__pregel_task_id"})
_KNOWN_NOT_OURS = _ALL_KEYS | _FRAMEWORK_KEYS | {
    f"ls_{key}" for key in ("provider", "model_name", "model_type", "temperature", "max_tokens", "stop",
                            "integration")} | {
    f"langgraph_{key}" for key in ("step", "node", "triggers", "path", "checkpoint_ns", "version", "api_url",
                                   "request_id", "auth_user", "auth_user_id", "auth_permissions")}
"""Keys that every run's metadata carries and none is the application's: set aside in one set
difference (in C) before the rule above looks at what is left, usually nothing."""


def user_metadata(metadata: Mapping[str, Any] | None, allowed: frozenset[str] | None) -> dict[str, Any] | None:
    """The application's own keys of a run's metadata (``allowed``: an allow-list; ``None``: all of them);
    LangChain's, LangGraph's and the attribution keys are not the application's. Made JSON,
    redacted and bounded by the caller (on the dispatcher)."""
    if not metadata:
        return None
    if allowed is not None:
        found = {k: metadata[k] for k in allowed if k in metadata}
        return found or None
    keys = metadata.keys()
    if keys <= _KNOWN_NOT_OURS:  # the common case, decided in C without building a set
        return None
    rest = keys - _KNOWN_NOT_OURS
    found = {k: v for k, v in metadata.items() if k in rest and isinstance(k, str)
             and not k.startswith(_FRAMEWORK_PREFIXES)}
    return found or None


def thread_of(metadata: Mapping[str, Any] | None) -> str | None:
    value = metadata.get("thread_id") if metadata else None
    return str(value) if isinstance(value, (str, int, uuid.UUID)) and not isinstance(value, bool) else None


class TraceCapture:
    """The trace ids of the runs started inside a :func:`capture_traces` block, in start order."""

    __slots__ = ("trace_ids",)

    def __init__(self) -> None:
        self.trace_ids: list[str] = []

    @property
    def trace_id(self) -> str | None:
        """The first trace started in the block (the request's, when the block wraps one invoke)."""
        return self.trace_ids[0] if self.trace_ids else None


_capture: contextvars.ContextVar[TraceCapture | None] = contextvars.ContextVar("vital_trace_capture", default=None)


@contextmanager
def capture_traces() -> Iterator[TraceCapture]:
    """Collect the trace ids of the runs started in this block, race-free: a context variable, so 10
    concurrent requests on one shared handler each get their own, where ``handler.last_trace_id`` is
    whichever request started last. LangChain's copies of the context share the collector.

        with vital_callbacks.capture_traces() as traces:
            answer = await graph.ainvoke(inputs, config={"callbacks": [handler]})
        handler.score(traces.trace_id, "helpfulness", 0.9)
    """
    found = TraceCapture()
    token = _capture.set(found)
    try:
        yield found
    finally:
        _capture.reset(token)


_LAST_KEPT = 8
"""Handlers whose last trace a context remembers (a context used with more is rare; bounded so a
long-lived thread's context does not grow with every per-request handler)."""
_last: contextvars.ContextVar[tuple[tuple[int, str], ...]] = contextvars.ContextVar("vital_last_trace", default=())


def note_trace(owner: int, trace_id: str) -> None:
    """Called at a root run's start: tell the enclosing :func:`capture_traces` block, if any, and
    remember the trace as ``owner``'s (a handler's unique token) last one in this context."""
    found = _capture.get()
    if found is not None:
        found.trace_ids.append(trace_id)
    kept = _last.get()
    if kept and kept[0][0] == owner:
        _last.set(((owner, trace_id), *kept[1:]))
    else:
        _last.set(((owner, trace_id), *(p for p in kept if p[0] != owner))[:_LAST_KEPT])


def last_trace(owner: int) -> str | None:
    """The trace ``owner`` last started in the current context (``None``: none here)."""
    return next((trace for who, trace in _last.get() if who == owner), None)


_warned_outside = False


def warn_outside_block(built_in: Attribution) -> None:
    """Once per process: a trace started outside any attribution on a handler built inside a block."""
    global _warned_outside
    if _warned_outside:
        return
    _warned_outside = True
    logger.warning("vital-callbacks: a trace started outside the attribute() block its handler was built in "
                   "(tenant %r): it is stored without a tenant. A stream runs where it is read, not where it "
                   "was created: pass the ids in config['metadata'] or VitalCallbackHandler(tenant_id=...)",
                   built_in.tenant_id)
