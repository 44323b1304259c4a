"""Step 6, last: captured content redacted once, so every sink (SQL rows, spill files, logs, OTel,
Langfuse) sees the same text; without ``VITAL_CAPTURE_CONTENT`` no content leaves this step at all.

Error messages are redacted always: an exception often quotes the input that caused it.
"""

from __future__ import annotations

from typing import Any

from vital_callbacks.core.events import Event, LLMCall, RetrieverCall, ToolCall
from vital_callbacks.core.redaction import Redactor

CONTENT: tuple[tuple[type[Event], tuple[str, ...]], ...] = (
    (LLMCall, ("prompt", "completion")), (ToolCall, ("input", "output")), (RetrieverCall, ("query",)))
"""The content fields of each event class."""


class Redact:
    def __init__(self, redactor: Redactor, capture_content: bool) -> None:
        self.redactor = redactor
        self.capture_content = capture_content

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        keys = next((keys for kind, keys in CONTENT if issubclass(cls, kind)), ())
        for key in keys:
            value = f.get(key)
            if value is not None:
                f[key] = self.redactor(value) if self.capture_content and isinstance(value, str) else None
        message = f.get("error_message")
        if message:
            f["error_message"] = self.redactor(message)
