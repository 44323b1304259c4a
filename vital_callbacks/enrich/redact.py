"""Step 6, last: captured content redacted once, so every sink (SQL rows, spill files, logs, OTel,
Langfuse) sees the same text; without ``VITAL_CAPTURE_CONTENT`` no content leaves this step at all.

Error messages are redacted always: an exception often quotes the input that caused it.
"""

from __future__ import annotations

import json
from typing import Any

from vital_callbacks.core.attribution import user_metadata
from vital_callbacks.core.events import USER_METADATA, Event, LLMCall, RetrieverCall, ToolCall
from vital_callbacks.core.redaction import Redactor

CONTENT: tuple[tuple[type[Event], tuple[str, ...]], ...] = (
    (LLMCall, ("prompt", "completion")), (ToolCall, ("input", "output")), (RetrieverCall, ("query",)))
"""The content fields of each event class."""
METADATA_CHARS = 2048


class Redact:
    kinds = (Event,)

    def __init__(self, redactor: Redactor, capture_content: bool,
                 metadata_keys: frozenset[str] | None = None) -> None:
        self.redactor = redactor
        self.capture_content = capture_content
        self.metadata_keys = metadata_keys
        """The metadata keys kept (an allow-list); ``None``: every key of the application's."""
        self._content: dict[type[Event], tuple[str, ...]] = {}

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        keys = self._content.get(cls)
        if keys is None:
            keys = self._content[cls] = next((keys for kind, keys in CONTENT if issubclass(cls, kind)), ())
        for key in keys:
            value = f.get(key)
            if value is not None:
                f[key] = self.redactor(value) if self.capture_content and isinstance(value, str) else None
        message = f.get("error_message")
        if message:
            f["error_message"] = self.redactor(message)
        if USER_METADATA in f:
            metadata = user_metadata(f.pop(USER_METADATA), self.metadata_keys)
            if metadata:
                f["metadata"] = self.metadata_json(metadata)

    def metadata_json(self, metadata: dict[str, Any]) -> str | None:
        """The run's own metadata as JSON, string values redacted (they are the application's text, like
        content), at most :data:`METADATA_CHARS`: keys in order while they fit, never cut JSON."""
        out: dict[str, Any] = {}
        size = 2
        for key, value in metadata.items():
            if isinstance(value, str):
                value = self.redactor(value)
            elif not isinstance(value, (int, float, bool)) and value is not None:
                try:
                    value = self.redactor(json.dumps(value, default=str, ensure_ascii=False))
                except (ValueError, RecursionError):  # a structure that contains itself: no JSON form
                    continue
            item = json.dumps({key: value}, ensure_ascii=False, default=str)
            if size + len(item) > METADATA_CHARS:
                break
            out[key] = value
            size += len(item)
        return json.dumps(out, ensure_ascii=False, default=str) if out else None
