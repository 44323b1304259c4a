"""Provider-reported usage, model names and finish reasons from an ``LLMResult``.

The single home of provider quirks. LangChain's ``usage_metadata`` is the normal source; the
``llm_output`` shapes below cover completion models and older integrations. Whatever the shape, the
result follows LangChain's convention: ``input`` includes cache reads/writes, ``output`` includes
reasoning. (Anthropic's raw ``input_tokens`` excludes cached tokens, so it is the one shape that
needs adding up; adding cache tokens to LangChain's ``input_tokens`` would double-count.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from vital_callbacks.core.events import TokenUsage
from vital_callbacks.providers.billing import (
    LANGCHAIN,
    Billing,
    Part,
    RawUsage,
    UnreadableUsage,
    count,
    dump_raw,
    dump_usage_metadata,
    find_raw,
    metadata_extras,
    read_billing,
    read_raw,
    with_web_searches,
)


class ResultSnapshot(tuple[Any, ...]):
    """What the worker needs of an ``LLMResult``, taken at ``on_llm_end``: ``llm_output``, then per
    generation the ``BaseMessage`` (chat models) or the ``Generation`` (completion models).

    LangChain's response cache later *replaces* ``generation.message`` on the very objects the
    first result holds (to zero the cost of a replay), so reading the result later on the worker
    would see a miss turned into a hit. Keeping the message objects themselves (which are replaced,
    never changed) makes the later read exact. One flat tuple, because it is built on the hot path
    and waits in the queue: every extra container there is one more object for the garbage
    collector to count and promote.
    """

    __slots__ = ()

    @property
    def llm_output(self) -> Mapping[str, Any] | None:
        return self[0]  # type: ignore[no-any-return]

    @property
    def items(self) -> tuple[Any, ...]:
        return self[1:]


def capture(response: Any) -> tuple[object, Mapping[str, Any] | None]:
    """What ``on_llm_end`` keeps of a result, as cheaply as it can: ``(output, llm_output)``.

    For the usual result (one prompt, one chat generation) the output is the message object itself:
    a reference, nothing allocated, and exact for the same reason a snapshot is (the cache replaces
    messages, it never changes them). Otherwise a :class:`ResultSnapshot`. :func:`as_snapshot` turns
    either back into a snapshot on the worker."""
    if not isinstance(response, LLMResult):
        return None, None
    generations = response.generations
    if len(generations) == 1 and len(generations[0]) == 1 and isinstance(generations[0][0], ChatGeneration):
        return generations[0][0].message, response.llm_output
    return snapshot(response), None


def as_snapshot(output: object, llm_output: Mapping[str, Any] | None) -> ResultSnapshot | None:
    if isinstance(output, ResultSnapshot):
        return output
    if isinstance(output, BaseMessage):
        return tuple.__new__(ResultSnapshot, (llm_output, output))
    return None


def snapshot(response: Any) -> ResultSnapshot | None:
    if not isinstance(response, LLMResult):
        return None
    generations = response.generations
    if len(generations) == 1 and len(generations[0]) == 1:  # one prompt, one candidate: nearly every call
        gen = generations[0][0]
        return tuple.__new__(ResultSnapshot, (response.llm_output,
                                              gen.message if isinstance(gen, ChatGeneration) else gen))
    return tuple.__new__(ResultSnapshot, [
        response.llm_output,
        *(gen.message if isinstance(gen, ChatGeneration) else gen
          for generations in response.generations for gen in generations),
    ])


def _messages(result: ResultSnapshot) -> Iterator[BaseMessage]:
    return (item for item in result.items if isinstance(item, BaseMessage))


_int = count


def from_usage_metadata(um: Mapping[str, Any]) -> TokenUsage:
    """LangChain's ``UsageMetadata`` dict to our counts."""
    inp, out, total = um.get("input_tokens"), um.get("output_tokens"), um.get("total_tokens")
    if (inp.__class__ is int and out.__class__ is int and total.__class__ is int and inp >= 0 and out >= 0
            and total > 0 and not _has_details(um)):
        return TokenUsage(inp, out, total)  # the usual shape, checked inline (this runs for every call)
    return _from_usage_metadata(um)


def _has_details(um: Mapping[str, Any]) -> bool:
    """Whether any token detail (cache, reasoning, TTL split) is non-zero."""
    for key in ("input_token_details", "output_token_details"):
        details = um.get(key)
        if details and any(details.values()):
            return True
    return False


def _from_usage_metadata(um: Mapping[str, Any]) -> TokenUsage:
    inp = _int(um.get("input_tokens"))
    out = _int(um.get("output_tokens"))
    details_in = um.get("input_token_details") or {}
    details_out = um.get("output_token_details") or {}
    total = _int(um.get("total_tokens")) or inp + out
    # Service tiers prefix the keys (``flex_cache_read``); Anthropic reports cache writes split by
    # TTL (``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``) with ``cache_creation`` 0.
    cache_read = sum(_int(v) for k, v in details_in.items() if k == "cache_read" or k.endswith("_cache_read"))
    write_1h = _int(details_in.get("ephemeral_1h_input_tokens"))
    cache_write = (
        _int(details_in.get("cache_creation")) + _int(details_in.get("ephemeral_5m_input_tokens")) + write_1h
    )
    return TokenUsage(
        input=inp,
        output=out,
        total=total,
        cache_read=cache_read,
        cache_write=cache_write,
        reasoning=sum(_int(v) for k, v in details_out.items() if k == "reasoning" or k.endswith("_reasoning")),
        cache_write_1h=write_1h,
        input_audio=_int(details_in.get("audio")),
        output_audio=_int(details_out.get("audio")),
    )


def from_llm_output(llm_output: Mapping[str, Any]) -> TokenUsage | None:
    """Usage from ``LLMResult.llm_output`` (completion models, legacy integrations)."""
    raw = llm_output.get("token_usage") or llm_output.get("usage")
    if not isinstance(raw, Mapping) or not raw:
        return None
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI wire format
        prompt_details = raw.get("prompt_tokens_details") or {}
        completion_details = raw.get("completion_tokens_details") or {}
        inp, out = _int(raw.get("prompt_tokens")), _int(raw.get("completion_tokens"))
        return TokenUsage(
            input=inp,
            output=out,
            total=_int(raw.get("total_tokens")) or inp + out,
            cache_read=_int(prompt_details.get("cached_tokens")),
            reasoning=_int(completion_details.get("reasoning_tokens")),
        )
    if "input_tokens" in raw:  # Anthropic wire format: input_tokens excludes cached tokens
        read = _int(raw.get("cache_read_input_tokens"))
        write = _int(raw.get("cache_creation_input_tokens"))
        inp = _int(raw.get("input_tokens")) + read + write
        out = _int(raw.get("output_tokens"))
        return TokenUsage(input=inp, output=out, total=inp + out, cache_read=read, cache_write=write)
    return None


def extract_usage(result: ResultSnapshot) -> TokenUsage | None:
    """Provider-reported usage of one LLM run, or ``None`` when the provider reported none."""
    total: TokenUsage | None = None
    for message in _messages(result):
        um = getattr(message, "usage_metadata", None)
        if um:
            usage = from_usage_metadata(um)
            total = usage if total is None else total + usage
    if total is not None and not total.is_empty:
        return total
    if result.llm_output:
        return from_llm_output(result.llm_output)
    return total


class Reading(NamedTuple):
    """Everything the worker reads from a result, in one pass (see :func:`read`)."""

    usage: TokenUsage | None
    model: str | None
    cache_hit: bool
    finish_reason: str | None
    service_tier: str | None = None
    parts: tuple[Part, ...] = ()
    """The usage billed per model, when iterations ran on more than one (else empty)."""
    raw_usage: str | None = None
    unreadable: str | None = None
    """Why the reported usage could not be read (a count that is not a number), when it could not."""


def read(result: ResultSnapshot, provider: str | None = None) -> Reading:
    """Usage, served model, cache hit, finish reason and billing details of a result.

    The provider's raw usage object comes first (see :mod:`~vital_callbacks.providers.billing`);
    ``usage_metadata`` where the integration carries none."""
    try:
        return _read(result, provider)
    except (UnreadableUsage, TypeError, AttributeError, ValueError, OverflowError) as exc:
        # A usage object of the wrong shape (not a dict, a count that is not a number) loses nothing:
        # the call is kept, its tokens estimated and flagged.
        reason = str(exc) if isinstance(exc, UnreadableUsage) else f"usage of an unexpected shape ({exc})"
        return Reading(None, _safe(response_model, result), _safe(is_cache_hit, result) or False,
                       _safe(finish_reason, result), raw_usage=_safe(_unread_raw, result, provider), unreadable=reason)


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def _unread_raw(result: ResultSnapshot, provider: str | None) -> str | None:
    """What the provider sent, kept as it was although it could not be read: why the call was estimated."""
    for message in _messages(result):
        raw = find_raw(message.response_metadata or {}, result[0])
        if raw is not None:
            return dump_raw(raw, provider)
        return dump_usage_metadata(getattr(message, "usage_metadata", None), provider)
    return None


def _read(result: ResultSnapshot, provider: str | None) -> Reading:
    messages = list(_messages(result))
    model = response_model(result)
    billings = [read_billing(m, result[0], provider, model) for m in messages] if messages else []
    if messages and all(b is not None for b in billings):
        found: list[Billing] = billings  # type: ignore[assignment]
        usage = found[0].usage
        seen = {found[0].source}
        for billing in found[1:]:
            if billing.source not in seen:  # one usage object for the whole response is billed once
                seen.add(billing.source)
                usage = usage + billing.usage
        parts = found[0].parts if len(found) == 1 and len(found[0].parts) > 1 else ()
        return Reading(usage, model, is_cache_hit(result), finish_reason(result), found[0].service_tier, parts,
                       found[0].raw)
    reported = extract_usage(result)
    tier: str | None = None
    raw: str | None = None
    if messages:
        tier, searches = metadata_extras(messages[0])
        if reported is not None and searches and not reported.web_searches:
            reported = with_web_searches(reported, (Part(None, reported),), searches)[0]
        if len(messages) == 1 and reported is not None:
            raw = dump_usage_metadata(getattr(messages[0], "usage_metadata", None), provider)
    return Reading(reported, model, is_cache_hit(result), finish_reason(result), tier, (), raw)


def _model_name(meta: Mapping[str, Any]) -> str | None:
    name = meta.get("model_name") or meta.get("model") or meta.get("model_id")
    return name if isinstance(name, str) and name else None


def _reason(meta: Mapping[str, Any]) -> str | None:
    # ``stopReason``: Bedrock Converse, as langchain_aws passes it through.
    reason = meta.get("finish_reason") or meta.get("stop_reason") or meta.get("done_reason") or meta.get("stopReason")
    return reason if isinstance(reason, str) else None


def _replayed(usage_metadata: Mapping[str, Any]) -> bool:
    """LangChain replays a cached chat generation with ``usage_metadata["total_cost"] = 0``."""
    return "total_cost" in usage_metadata and usage_metadata["total_cost"] == 0


def response_model(result: ResultSnapshot) -> str | None:
    """The model the provider says served the call (it wins over what was requested)."""
    for message in _messages(result):
        name = _model_name(message.response_metadata or {})
        if name:
            return name
    return _model_name(result.llm_output or {})


def finish_reason(result: ResultSnapshot) -> str | None:
    for item in result.items:
        if isinstance(item, BaseMessage):
            reason = _reason(item.response_metadata or {})
        else:
            info = getattr(item, "generation_info", None) or {}
            reason = info.get("finish_reason") or info.get("stop_reason")
        if isinstance(reason, str):
            return reason
    return None


def is_cache_hit(result: ResultSnapshot) -> bool:
    return any(_replayed(getattr(message, "usage_metadata", None) or {}) for message in _messages(result))


def completion_text(result: ResultSnapshot) -> str:
    parts: list[str] = []
    for item in result.items:
        text = message_text(item.content) if isinstance(item, BaseMessage) else getattr(item, "text", "")
        if isinstance(text, str) and text:
            parts.append(text)
    return "\n".join(parts)


def message_text(content: Any) -> str:
    """Text of a message's content, whether a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out: list[str] = []
        for block in content:
            if isinstance(block, str):
                out.append(block)
            elif isinstance(block, Mapping):
                text = block.get("text") or block.get("thinking")
                if isinstance(text, str):
                    out.append(text)
        return "\n".join(out)
    return "" if content is None else str(content)


def prompt_text(raw_input: object) -> str:
    """Text of what ``on_chat_model_start`` (lists of messages) or ``on_llm_start`` (strings) got."""
    if not isinstance(raw_input, (list, tuple)):
        return "" if raw_input is None else str(raw_input)
    parts: list[str] = []
    for item in raw_input:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, (list, tuple)):
            for message in item:
                text = message_text(getattr(message, "content", message))
                if text:
                    parts.append(text)
    return "\n".join(parts)


def reread(raw_usage: str, model: str | None) -> tuple[TokenUsage, tuple[Part, ...]] | None:
    """Usage and billed parts from a stored :attr:`LLMCall.raw_usage` (what ``reprice`` recomputes
    from), read as it would be today; ``None`` if it cannot be read. Web searches that only the
    message's content blocks showed (OpenAI's Responses API) are not in it: they are kept in the
    ``web_searches`` column."""
    try:
        stored = json.loads(raw_usage)
        raw = RawUsage(stored["shape"], stored["usage"], stored.get("from", ""))
        if not isinstance(raw.usage, Mapping):
            return None
        if raw.shape == LANGCHAIN:
            usage = from_usage_metadata(raw.usage)
            return usage, (Part(None, usage),)
        return read_raw(raw, stored.get("provider"), model)
    except (ValueError, KeyError, TypeError, UnreadableUsage):
        return None
