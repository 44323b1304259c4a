"""Keep the raw usage object that two LangChain integrations drop, so the call is priced as billed.

Upstream gaps (worked around here until the integrations carry the raw usage themselves):

* ``langchain_anthropic`` streaming builds ``usage_metadata`` from ``message_delta`` and drops the rest
  of the raw usage: the billed ``iterations`` (compaction and advisor steps) and
  ``server_tool_use.web_search_requests``. A non-streamed response keeps it in ``response_metadata``.
* ``langchain_google_genai`` keeps no raw ``usageMetadata`` at all, so per-modality counts (audio is
  billed at its own rate) are lost, streamed or not.

Each shim wraps the integration's conversion function: it calls the original, then appends the
provider's usage object to the message's ``response_metadata`` under
:data:`~vital_callbacks.providers.billing.STREAM_USAGE_KEY`, as a one-element list, so LangChain's chunk
merging appends the snapshots of a stream in order instead of adding their numbers up. The wrapper
never changes what the original returns otherwise, and never raises from its own part. Installed
once per process, the first time a call of that provider starts.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from vital_callbacks.providers.billing import STREAM_USAGE_KEY

logger = logging.getLogger("vital_callbacks")

_SHIMMED = "__vital_shim__"
_lock = threading.Lock()
_done: set[str] = set()


def _dump(usage: Any) -> dict[str, Any] | None:
    dump = getattr(usage, "model_dump", None)
    if dump is None:
        return None
    value = dump(mode="json", by_alias=True, exclude_none=True)
    return value if isinstance(value, dict) else None


def _keep(message: Any, usage: Any) -> None:
    raw = _dump(usage)
    if raw is not None and isinstance(getattr(message, "response_metadata", None), dict):
        message.response_metadata[STREAM_USAGE_KEY] = [raw]


def _anthropic() -> bool:
    module = sys.modules.get("langchain_anthropic.chat_models")
    if module is None:
        return False  # not imported (yet): try again with the next call
    cls = getattr(module, "ChatAnthropic", None)
    original = getattr(cls, "_make_message_chunk_from_anthropic_event", None)
    if cls is None or original is None or getattr(original, _SHIMMED, False):
        return True  # another version of the integration (nothing to wrap), or wrapped already

    @functools.wraps(original)
    def make_chunk(self: Any, event: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, event, *args, **kwargs)
        try:
            kind = getattr(event, "type", None)
            chunk = result[0]
            if chunk is not None and kind in ("message_start", "message_delta"):
                _keep(chunk, event.message.usage if kind == "message_start" else event.usage)
        except Exception:  # never into the user's stream
            logger.debug("vital-callbacks: could not keep Anthropic stream usage", exc_info=True)
        return result

    setattr(make_chunk, _SHIMMED, True)
    cls._make_message_chunk_from_anthropic_event = make_chunk
    return True


def _google() -> bool:
    module = sys.modules.get("langchain_google_genai.chat_models")
    if module is None:
        return False
    original = getattr(module, "_response_to_result", None)
    if original is None or getattr(original, _SHIMMED, False):
        return True

    @functools.wraps(original)
    def to_result(response: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(response, *args, **kwargs)
        try:
            usage = getattr(response, "usage_metadata", None)
            stream = kwargs.get("stream", args[0] if args else False)
            # A stream's counts are cumulative: the chunk that finishes it has them all, and keeping
            # only that one keeps the user's merged message small.
            final = not stream or any(getattr(c, "finish_reason", None) for c in response.candidates or ())
            if usage is not None and final:
                for generation in result.generations:
                    _keep(generation.message, usage)
        except Exception:
            logger.debug("vital-callbacks: could not keep Gemini usage", exc_info=True)
        return result

    setattr(to_result, _SHIMMED, True)
    module._response_to_result = to_result  # type: ignore[attr-defined]
    return True


SHIMS: dict[str, Callable[[], bool]] = {"anthropic": _anthropic, "google_genai": _google}
"""LangChain ``ls_provider`` -> its shim."""


def install(ls_provider: str | None) -> None:
    """Install the shim for this provider's integration, once (cheap to call for every call)."""
    if ls_provider in _done or ls_provider not in SHIMS:
        return
    with _lock:
        if ls_provider in _done:
            return
        try:
            settled = SHIMS[ls_provider]()
        except Exception:
            settled = True
            logger.warning("vital-callbacks: could not install the %s usage shim; its calls are priced from "
                           "LangChain's usage_metadata", ls_provider, exc_info=True)
        if settled:
            _done.add(ls_provider)
