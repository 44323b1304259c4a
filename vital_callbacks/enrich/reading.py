"""Step 1: read what the provider reported (usage, served model, finish reason, cache hit) out of
the response the hook kept, and the text an estimate or content capture needs."""

from __future__ import annotations

import logging
from typing import Any

from vital_callbacks.core.events import BILLED_PARTS, RAW_LLM_OUTPUT, READING, Event, LLMCall, TokenUsage, ToolCall
from vital_callbacks.providers.usage import Reading, as_snapshot, completion_text, message_text, prompt_text, read

logger = logging.getLogger("vital_callbacks")

_NO_USAGE = TokenUsage()
_NOTHING_READ = Reading(None, None, False, None)


class ReadResponse:
    """Fills ``usage``, ``token_source``, ``model``, ``cache_hit``, ``finish_reason`` of an LLM call;
    ``prompt`` / ``completion`` text too, when content is captured or tokens must be estimated."""

    kinds = (LLMCall, ToolCall)

    def __init__(self, capture_content: bool) -> None:
        self.capture_content = capture_content
        self.unreadable_usage = 0
        """Calls whose reported usage had counts that are not numbers (estimated instead, and flagged)."""

    def __call__(self, cls: type[Event], f: dict[str, Any]) -> None:
        if cls is LLMCall or issubclass(cls, LLMCall):
            self.llm(f)
        elif issubclass(cls, ToolCall):
            self.tool(f)

    def llm(self, f: dict[str, Any]) -> None:
        response = as_snapshot(f.pop("raw_output", None), f.pop(RAW_LLM_OUTPUT, None))
        raw_input = f.pop("raw_input", None)
        reading = f.pop(READING, None)
        if reading is None:
            reading = read(response, f.get("provider")) if response is not None else _NOTHING_READ
        if reading.unreadable is not None:
            self.unreadable_usage += 1
            if self.unreadable_usage == 1:
                logger.warning("vital-callbacks: the provider's usage for model %r could not be read (%s); its "
                               "tokens are estimated and flagged token_source='estimate'", reading.model,
                               reading.unreadable)
        provider_usage = reading.usage
        f["service_tier"] = reading.service_tier
        if reading.raw_usage is not None:
            f["raw_usage"] = reading.raw_usage
        if reading.parts:
            f[BILLED_PARTS] = reading.parts
        f["model"] = reading.model or f.get("model")
        f["usage"] = provider_usage or f.get("usage") or _NO_USAGE
        f["token_source"] = "provider" if provider_usage is not None else f.get("token_source", "provider")
        f["cache_hit"] = f.get("cache_hit", False) or reading.cache_hit
        if not f.get("finish_reason"):
            f["finish_reason"] = reading.finish_reason
        if self.capture_content or provider_usage is None:
            if f.get("prompt") is None:
                f["prompt"] = prompt_text(raw_input)
            if f.get("completion") is None and response is not None:
                f["completion"] = completion_text(response)

    def tool(self, f: dict[str, Any]) -> None:
        output = f.pop("raw_output", None)
        if self.capture_content and output is not None:
            f["output"] = message_text(getattr(output, "content", output))
