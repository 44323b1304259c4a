"""Who a run is for: tenant, user, session (and tags), from metadata, a context, or env defaults.

Precedence, most specific first: the run's ``config["metadata"]``, then an enclosing
:func:`attribute` block, then ``VITAL_TENANT_ID`` / ``VITAL_USER_ID`` / ``VITAL_SESSION_ID``.
Resolved once at a trace's root and inherited by every child event.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

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


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def from_metadata(metadata: Mapping[str, Any] | None) -> Attribution:
    if not metadata:
        return EMPTY
    found: dict[str, str | None] = {}
    for field_name, keys in _KEYS.items():
        for key in keys:
            value = _text(metadata.get(key))
            if value is not None:
                found[field_name] = value
                break
    return replace(EMPTY, **found) if found else EMPTY
