"""What a provider billed for one call, read from the raw usage object the provider returned.

LangChain's ``usage_metadata`` is a lossy summary: it drops Anthropic's billed ``iterations``
(compaction, advisor steps), server-tool requests (web searches), audio and per-modality counts, and
some integrations drop cache reads (``langchain_mistralai``). The raw usage, where an integration
carries it (``response_metadata`` / ``llm_output``, or what :mod:`~vital_callbacks.providers.shims`
keeps of a stream), is read with ``genai_prices.extract_usage``, which knows each API's billing units;
``usage_metadata`` is the fallback. What the catalog cannot know lives here: where LangChain puts
the raw object, LangChain's own conventions, and which model a billed iteration ran on.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from langchain_core.messages import BaseMessage
from msgspec.structs import replace

from vital_callbacks.core.events import TokenUsage
from vital_callbacks.providers.names import OPENAI_COMPATIBLE, PROVIDER_ALIASES

logger = logging.getLogger("vital_callbacks")

RAW_USAGE_LIMIT = 8192
"""Longest raw usage JSON kept on an event (a usage object is a few hundred bytes; iterations more)."""

API_BASE_KEYS = ("openai_api_base", "base_url", "azure_endpoint", "anthropic_api_url", "endpoint", "api_base",
                 "endpoint_url")
"""Where LangChain's chat models keep the URL requests go to (their serialized constructor kwargs)."""

STREAM_USAGE_KEY = "vital_stream_usage"
"""``response_metadata`` key under which :mod:`~vital_callbacks.providers.shims` keeps a stream's raw usage
objects, in order (a list, so LangChain's chunk merging appends instead of adding numbers up)."""



class UnreadableUsage(ValueError):
    """A token count that is neither a number nor a numeric string: flagged, never read as 0."""


class Part(NamedTuple):
    """Usage billed at one model's rates (a call has one, unless billed iterations ran on others)."""

    model: str | None
    """``None``: the call's own model."""
    usage: TokenUsage
    label: str = ""


class Billing(NamedTuple):
    usage: TokenUsage
    """Everything the call billed, summed over its parts."""
    parts: tuple[Part, ...]
    service_tier: str | None
    raw: str | None
    """The raw usage as JSON (bounded), with where it came from; ``None`` when none was carried."""
    source: int = 0
    """Identity of the raw usage object read: the messages of one response (``n > 1``) may all point at
    the response's one usage object (``llm_output``), which is billed once, not once per message."""


# -- where the request went ---------------------------------------------------------------------------
def api_base(serialized_kwargs: Mapping[str, Any] | None) -> str | None:
    """The base URL a chat model sends to, from its serialized kwargs (``None``: its default)."""
    if not serialized_kwargs:
        return None
    for key in API_BASE_KEYS:
        value = serialized_kwargs.get(key)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
    return None


@functools.lru_cache(maxsize=256)
def provider_for(ls_provider: str | None, base_url: str | None) -> str | None:
    """The provider that served the call: from the URL the request went to when it names a known API
    (OpenRouter, Groq, DeepSeek... through ``ChatOpenAI(base_url=...)``), else LangChain's provider
    name. An OpenAI-compatible server the catalog does not know is ``openai-compatible``: priced only
    by a ``pricing/`` override, never at OpenAI's list price."""
    if not base_url:
        return ls_provider
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "openai.com" or host.endswith(".openai.com"):  # api., and the regional eu.api., us.api.
        return ls_provider
    from genai_prices import data_snapshot

    try:
        found = data_snapshot.get_snapshot().find_provider(None, None, base_url.rstrip("/") + "/")
    except LookupError:
        found = None
    if found is None:
        if (ls_provider or "").lower() in ("openai", "azure", "azure_openai"):
            return OPENAI_COMPATIBLE
        return ls_provider
    mapped = PROVIDER_ALIASES.get((ls_provider or "").lower(), ls_provider)
    return ls_provider if mapped == found.id else found.id


def catalog_provider(provider: str | None) -> str | None:
    if not provider:
        return None
    key = provider.strip().lower()
    return PROVIDER_ALIASES.get(key, key)


# -- reading ------------------------------------------------------------------------------------------
_MAX_COUNT = 2**63 - 1
"""The largest count a BIGINT column stores; anything above is not a real count."""


def count(value: Any) -> int:
    """A token count: ints, floats and numeric strings (some gateways send ``"123"``); ``None`` is 0.
    Anything else (``"n/a"``, NaN, infinity, a negative or impossibly large number, a bool) raises
    :class:`UnreadableUsage`: flagged, never read as 0."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise UnreadableUsage(f"token count {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if not value.strip().lstrip("-").isdigit() else int(value.strip())
        except ValueError:
            raise UnreadableUsage(f"token count {value!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnreadableUsage(f"token count {value!r}")
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_COUNT:
        return value
    raise UnreadableUsage(f"token count {value!r}")


GENAI_UNITS = {
    "input": "input_tokens", "output": "output_tokens", "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens", "cache_write_1h": "cache_write_1h_tokens",
    "reasoning": "output_reasoning_tokens", "input_audio": "input_audio_tokens",
    "cache_audio_read": "cache_audio_read_tokens", "output_audio": "output_audio_tokens",
    "web_searches": "web_searches",
}
"""Our ``TokenUsage`` fields -> genai-prices' units (the same hierarchy: ``input_tokens`` includes cache
reads and writes and audio, ``output_tokens`` reasoning and audio): the one mapping, both ways."""


def _from_genai(usage: Any) -> TokenUsage:
    """A genai-prices ``Usage`` to ours."""
    values = vars(usage)
    counts = {ours: count(values.get(theirs)) for ours, theirs in GENAI_UNITS.items()}
    return TokenUsage(total=counts["input"] + counts["output"], **counts)


def to_genai_usage(usage: TokenUsage) -> Any:
    """Ours as a genai-prices ``Usage`` (only the non-zero units, input and output always)."""
    from genai_prices import Usage

    return Usage(**{theirs: value for ours, theirs in GENAI_UNITS.items()
                    if (value := getattr(usage, ours)) or ours in ("input", "output")})


def _extract(body: Mapping[str, Any], provider_id: str, flavor: str) -> TokenUsage | None:
    from genai_prices import extract_usage

    numbers = _numbers(body)  # raises UnreadableUsage for garbage: flagged, not read as "no usage"
    try:
        return _from_genai(extract_usage(numbers, provider_id=provider_id, api_flavor=flavor).usage)
    except (LookupError, ValueError, TypeError, AttributeError):
        return None


_COUNT_WORDS = ("token", "count", "requests")


def _numbers(value: Any, key: str = "") -> Any:
    """The raw usage with counts a gateway sent as strings (``"3120"``) made numbers, which
    ``extract_usage`` requires; a count that is not a number raises :class:`UnreadableUsage` (left to
    ``extract_usage``, it would fail as "no usage" and the call would be read from the lossier
    ``usage_metadata`` instead). Other strings (``service_tier``, ``type``, ``model``) stay as they are."""
    if isinstance(value, Mapping):
        return {k: _numbers(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, key) for v in value]
    if isinstance(value, str) and any(word in key.lower() for word in _COUNT_WORDS):
        return count(value)
    return value


@functools.lru_cache(maxsize=64)
def _flavors(provider_id: str) -> frozenset[str]:
    from genai_prices import data_snapshot

    try:
        provider = data_snapshot.get_snapshot().find_provider(None, provider_id, None)
    except LookupError:
        return frozenset()
    return frozenset(e.api_flavor for e in provider.extractors or ())


def _flavor(provider_id: str, *preferred: str) -> str | None:
    flavors = _flavors(provider_id)
    return next((f for f in preferred if f in flavors), None)


LANGCHAIN = "langchain"
"""The shape of a stored ``usage_metadata`` (LangChain's convention, not a provider's wire format)."""


class RawUsage(NamedTuple):
    """A raw usage object found in a LangChain message, and its API shape."""

    shape: str
    """``openai-chat`` (``prompt_tokens``...), ``anthropic`` (``input_tokens`` without cache), ``gemini``,
    or ``langchain`` (a stored ``usage_metadata``)."""
    usage: Mapping[str, Any]
    where: str


def find_raw(meta: Mapping[str, Any], llm_output: Mapping[str, Any] | None) -> RawUsage | None:
    """The provider's own usage object, where the LangChain integration left it."""
    for where, source in (("response_metadata", meta), ("llm_output", llm_output or {})):
        token_usage = source.get("token_usage")
        if isinstance(token_usage, Mapping) and ("prompt_tokens" in token_usage or "completion_tokens" in token_usage):
            return RawUsage("openai-chat", token_usage, f"{where}.token_usage")
        usage = source.get("usage")
        if (isinstance(usage, Mapping) and "input_tokens" in usage and "output_tokens" in usage
                and "prompt_tokens" not in usage):
            return RawUsage("anthropic", usage, f"{where}.usage")
        if isinstance(usage, Mapping) and "prompt_tokens" in usage:
            return RawUsage("openai-chat", usage, f"{where}.usage")
    stream = meta.get(STREAM_USAGE_KEY)
    if isinstance(stream, list) and stream:
        first = stream[0]
        if isinstance(first, Mapping) and ("promptTokenCount" in first or "candidatesTokenCount" in first):
            return RawUsage("gemini", stream[-1], "stream")  # cumulative: the last one is the total
        merged: dict[str, Any] = {}
        for snapshot in stream:  # Anthropic: message_start's usage, then message_delta's final counts
            if isinstance(snapshot, Mapping):
                merged.update({k: v for k, v in snapshot.items() if v is not None})
        if "input_tokens" in merged or "output_tokens" in merged:
            return RawUsage("anthropic", merged, "stream")
    return None


def dump_usage_metadata(usage_metadata: Any, provider: str | None) -> str | None:
    """LangChain's ``usage_metadata`` as the stored raw usage, where the integration carries nothing
    rawer (OpenAI's Responses API, Bedrock Converse, OpenAI streams): still what the cost came from."""
    if not isinstance(usage_metadata, Mapping) or not usage_metadata:
        return None
    return _dump(RawUsage(LANGCHAIN, usage_metadata, "usage_metadata"), catalog_provider(provider))


def dump_raw(raw: RawUsage, provider: str | None) -> str | None:
    return _dump(raw, catalog_provider(provider))


def _dump(raw: RawUsage, provider_id: str | None) -> str | None:
    try:
        text = json.dumps({"provider": provider_id, "shape": raw.shape, "from": raw.where, "usage": raw.usage},
                          separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None
    return text if len(text) <= RAW_USAGE_LIMIT else None


def _service_tier(meta: Mapping[str, Any], raw: RawUsage | None) -> str | None:
    tier = meta.get("service_tier")
    if tier is None and raw is not None:
        tier = raw.usage.get("service_tier") or raw.usage.get("serviceTier")
    return tier if isinstance(tier, str) and tier else None


def _web_search_blocks(message: BaseMessage) -> int:
    """OpenAI's Responses API bills each ``web_search_call`` output item; LangChain keeps them as
    content blocks (the usage object does not count them)."""
    content = message.content
    if not isinstance(content, list):
        return 0
    return sum(1 for block in content if isinstance(block, Mapping) and block.get("type") == "web_search_call")


def read_raw(raw: RawUsage, provider_id: str | None, model: str | None) -> tuple[TokenUsage, tuple[Part, ...]] | None:
    """Usage (and billed parts) from a raw usage object, through ``genai_prices.extract_usage``."""
    pid = catalog_provider(provider_id) or ""
    if raw.shape == "openai-chat":
        flavor = _flavor(pid, "chat", "default")
        if flavor is None:
            pid, flavor = "openai", "chat"  # an OpenAI-compatible server: the wire format is OpenAI's
        usage = _extract({"usage": raw.usage}, pid, flavor)  # units only: the model is matched when priced
    elif raw.shape == "anthropic":
        # Anthropic's wire format, also through Bedrock, Vertex or Azure: the units are Anthropic's.
        anthropic_flavor = "default" if pid == "anthropic" else _flavor(pid, "anthropic")
        pid, flavor = (pid, anthropic_flavor) if anthropic_flavor else ("anthropic", "default")
        iterations = raw.usage.get("iterations")
        if isinstance(iterations, Sequence) and any(
                isinstance(it, Mapping) and it.get("type") != "message" for it in iterations):
            return _iterations(raw.usage, iterations, pid, flavor)
        usage = _extract({"usage": raw.usage}, pid, flavor)  # units only: the model is matched when priced
    else:
        usage = _extract({"usageMetadata": raw.usage}, "google", "default")
    if usage is None:
        return None
    return usage, (Part(None, usage),)


def _iterations(top: Mapping[str, Any], iterations: Sequence[Any], pid: str,
                flavor: str) -> tuple[TokenUsage, tuple[Part, ...]] | None:
    """Anthropic bills every sampling iteration (a compaction step, an advisor step on another model);
    the top-level numbers cover the final ``message`` iterations only. Upstream, neither LangChain nor
    genai-prices reads ``iterations`` yet, so they are summed here, per model, each through
    ``extract_usage``; reasoning and server-tool counts, reported at the top level only, go to the
    call's own model."""
    per_model: dict[str | None, TokenUsage] = {}
    labels: dict[str | None, list[str]] = {}
    for it in iterations:
        if not isinstance(it, Mapping):
            continue
        usage = _extract({"usage": {k: v for k, v in it.items() if k not in ("type", "model")}}, pid, flavor)
        if usage is None:
            return None
        model = it.get("model") if isinstance(it.get("model"), str) else None
        per_model[model] = per_model.get(model, TokenUsage()) + usage
        labels.setdefault(model, []).append(str(it.get("type")))
    top_usage = _extract({"usage": {k: v for k, v in top.items() if k != "iterations"}}, pid, flavor) or TokenUsage()
    per_model[None] = replace(per_model.get(None, TokenUsage()), reasoning=top_usage.reasoning,
                              web_searches=top_usage.web_searches)
    labels.setdefault(None, [])
    parts = tuple(Part(model, usage, "+".join(labels[model])) for model, usage in per_model.items())
    total = TokenUsage()
    for part in parts:
        total = total + part.usage
    return total, parts


def read_billing(message: BaseMessage, llm_output: Mapping[str, Any] | None, provider: str | None,
                 model: str | None) -> Billing | None:
    """The billing of one chat message from its raw usage, or ``None`` when none is carried (the
    caller then reads ``usage_metadata``). Raises :class:`UnreadableUsage` for garbage counts."""
    meta = message.response_metadata or {}
    raw = find_raw(meta, llm_output)
    if raw is None:
        return None
    read = read_raw(raw, provider, model)
    if read is None:
        return None
    usage, parts = read
    if not usage.web_searches:
        searches = _web_search_blocks(message)
        if searches:
            usage, parts = with_web_searches(usage, parts, searches)
    return Billing(usage, parts, _service_tier(meta, raw), _dump(raw, catalog_provider(provider)), id(raw.usage))


def with_web_searches(usage: TokenUsage, parts: tuple[Part, ...], searches: int) -> tuple[TokenUsage, tuple[Part, ...]]:
    first = parts[0]
    return (replace(usage, web_searches=usage.web_searches + searches),
            (first._replace(usage=replace(first.usage, web_searches=first.usage.web_searches + searches)),
             *parts[1:]))


def metadata_extras(message: BaseMessage) -> tuple[str | None, int]:
    """Service tier and web searches of a message whose usage came from ``usage_metadata``."""
    meta = message.response_metadata or {}
    return _service_tier(meta, None), _web_search_blocks(message)

