"""A stop budget's refusal is the workflow's answer, not a broken callback.

LangChain logs every exception a callback raises as "Error in <handler>.<event> callback" before it
re-raises it for a handler with ``raise_error``. For a ``BudgetExceeded`` that line is noise (the
refusal is recorded as an error row and raised to the caller): one filter on LangChain's callback
logger drops exactly those lines, and nothing else.
"""

from __future__ import annotations

import logging
import threading

_CALLBACK_LOGGER = "langchain_core.callbacks.manager"
_lock = threading.Lock()
_installed: list[logging.Filter] = []


class _DropBudgetRefusals(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        refusal = (isinstance(args, tuple) and len(args) == 3 and args[0] == "VitalCallbackHandler"
                   and isinstance(args[2], str) and args[2].startswith("BudgetExceeded("))
        return not refusal


def quiet_refusals() -> None:
    """Install the filter once per process (the first handler that enforces a stop budget does)."""
    if _installed:
        return
    with _lock:
        if not _installed:
            refusal_filter = _DropBudgetRefusals()
            logging.getLogger(_CALLBACK_LOGGER).addFilter(refusal_filter)
            _installed.append(refusal_filter)
