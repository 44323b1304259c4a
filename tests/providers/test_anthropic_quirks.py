"""Anthropic quirks: ``usage.iterations`` bills every sampling step (a compaction step, an advisor step
run by another model at that model's rates), while the top-level counts cover the final message only;
and server-side web searches are billed per request (``usage.server_tool_use.web_search_requests``),
streamed or not. langchain_anthropic keeps neither in ``usage_metadata``, and drops the raw usage of a
stream entirely: the handler must read the raw usage (the shim keeps the stream's)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers._replay import (
    Recorder,
    areplay,
    assert_clean,
    catalog_cost,
    drop_none,
    json_body,
    raw_usage,
    replay,
    sse_data,
)

langchain_anthropic = pytest.importorskip("langchain_anthropic")

COMPACTION = "quirks_anthropic_compaction.yaml"
COMPACTION_STREAM = "quirks_anthropic_compaction_stream.yaml"
ADVISOR = "quirks_anthropic_advisor.yaml"
WEB_SEARCH = "quirks_anthropic_web_search.yaml"
WEB_SEARCH_STREAM = "quirks_anthropic_web_search_stream.yaml"
WEB_SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


def _client(model: str, **kwargs: Any) -> Any:
    return langchain_anthropic.ChatAnthropic(model=model, api_key="sk-ant-test", max_retries=0, max_tokens=4096,
                                             **kwargs)


def _stream_usage(cassette: str) -> dict[str, Any]:
    """The usage a stream reports: ``message_start``'s, overwritten by ``message_delta``'s final counts."""
    events = sse_data(cassette)
    (start,) = [e for e in events if e["type"] == "message_start"]
    usage = dict(start["message"]["usage"])
    for event in events:
        if event["type"] == "message_delta":
            usage.update(event["usage"])
    return usage


def _assert_raw(call: Any, where: str, wire: dict[str, Any]) -> None:
    """The recorded raw usage is the provider's object as it came off the wire (every field kept)."""
    raw = raw_usage(call)
    assert (raw["provider"], raw["shape"], raw["from"]) == ("anthropic", "anthropic", where)
    assert drop_none(raw["usage"]) == wire


def test_compaction_iteration_is_billed(recorder: Recorder) -> None:
    """A compaction step (its own 48,210-token cache write) is billed besides the message: tokens and
    cost are the sums over ``usage.iterations``, not the top-level 312 in / 27 out."""
    call = replay(recorder, COMPACTION, _client("claude-sonnet-4-6", betas=["compact-2026-01-12"]))
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("anthropic", "claude-sonnet-4-6", "end_turn")
    u = call.usage
    # compaction (120 + 48210 cache-write in, 164 out) + message (312 in, 27 out)
    assert (u.input, u.cache_write, u.cache_read, u.output, u.total) == (48642, 48210, 0, 191, 48833)
    _assert_raw(call, "response_metadata.usage", json_body(COMPACTION)["usage"])
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "claude-sonnet-4-6", "anthropic", input_tokens=48642,
                                           cache_write_tokens=48210, output_tokens=191)
    # 432 x $3 + 48210 x $3.75 + 191 x $15, per million tokens.
    assert call.cost.total == Decimal("0.1849485")


def _assert_compaction_stream(call: Any, recorder: Recorder) -> None:
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason, call.streamed) == (
        "anthropic", "claude-sonnet-4-6", "end_turn", True)
    u = call.usage
    # compaction (95 + 41872 cache-read in, 141 out) + message (204 in, 12 out)
    assert (u.input, u.cache_read, u.cache_write, u.output) == (42171, 41872, 0, 153)
    _assert_raw(call, "stream", _stream_usage(COMPACTION_STREAM))
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "claude-sonnet-4-6", "anthropic", input_tokens=42171,
                                           cache_read_tokens=41872, output_tokens=153)
    # 299 x $3 + 41872 x $0.30 + 153 x $15, per million tokens.
    assert call.cost.total == Decimal("0.0157536")


def test_compaction_iterations_in_a_stream(recorder: Recorder) -> None:
    """Streamed, the iterations arrive in ``message_delta``'s usage (which langchain_anthropic drops):
    the call is still billed as the sum of the compaction and message iterations."""
    call = replay(recorder, COMPACTION_STREAM, _client("claude-sonnet-4-6", betas=["compact-2026-01-12"]),
                  stream=True)
    _assert_compaction_stream(call, recorder)


async def test_compaction_iterations_in_an_astream(recorder: Recorder) -> None:
    """The same stream through ``astream`` in an async graph node: the same billed sum."""
    call = await areplay(recorder, COMPACTION_STREAM, _client("claude-sonnet-4-6", betas=["compact-2026-01-12"]),
                         stream=True)
    _assert_compaction_stream(call, recorder)


def test_advisor_iteration_is_priced_at_the_advisor_models_rate(recorder: Recorder) -> None:
    """An ``advisor_message`` iteration run by claude-opus-4-8 is priced at Opus' rates, the message
    iterations at claude-sonnet-5's: the cost is the sum of the per-model prices."""
    _assert_advisor_call(replay(recorder, ADVISOR, _client("claude-sonnet-5")), recorder)


async def test_advisor_iteration_via_ainvoke(recorder: Recorder) -> None:
    """The same advisor response through ``ainvoke`` in an async graph node: the same per-model sum."""
    _assert_advisor_call(await areplay(recorder, ADVISOR, _client("claude-sonnet-5")), recorder)


def _assert_advisor_call(call: Any, recorder: Recorder) -> None:
    assert_clean(call, recorder)
    assert (call.provider, call.model) == ("anthropic", "claude-sonnet-5")
    u = call.usage
    assert (u.input, u.output, u.reasoning) == (1342 + 2874 + 1489, 96 + 41 + 17, 35)
    _assert_raw(call, "response_metadata.usage", json_body(ADVISOR)["usage"])
    own = catalog_cost(call, "claude-sonnet-5", "anthropic", input_tokens=1342 + 1489, output_tokens=96 + 17,
                       output_reasoning_tokens=35)
    advisor = catalog_cost(call, "claude-opus-4-8", "anthropic", input_tokens=2874, output_tokens=41)
    all_at_sonnet = catalog_cost(call, "claude-sonnet-5", "anthropic", input_tokens=5705, output_tokens=154)
    assert call.cost is not None
    assert call.cost.total == own + advisor != all_at_sonnet
    # Sonnet 5: 2831 x $2 + 113 x $10; Opus 4.8: 2874 x $5 + 41 x $25, per million tokens.
    assert call.cost.total == Decimal("0.022187")
    assert call.cost.detail is not None and "advisor_message@claude-opus-4-8" in call.cost.detail


def test_web_search_requests_are_billed(recorder: Recorder) -> None:
    """``server_tool_use.web_search_requests: 2`` adds two per-search fees to the token cost, and the
    cost detail says so."""
    call = replay(recorder, WEB_SEARCH, _client("claude-sonnet-4-6").bind_tools([WEB_SEARCH_TOOL]))
    assert_clean(call, recorder)
    assert (call.model, call.finish_reason) == ("claude-sonnet-4-6", "end_turn")
    assert (call.usage.input, call.usage.output, call.usage.web_searches) == (18342, 412, 2)
    _assert_raw(call, "response_metadata.usage", json_body(WEB_SEARCH)["usage"])
    with_fees = catalog_cost(call, "claude-sonnet-4-6", "anthropic", input_tokens=18342, output_tokens=412,
                             web_searches=2)
    assert call.cost is not None
    assert call.cost.total == with_fees
    # 18342 x $3 + 412 x $15 per million tokens, plus 2 searches x $10 per thousand.
    assert call.cost.total == Decimal("0.081206")
    assert call.cost.detail is not None and "web_searches=2" in call.cost.detail


def test_web_search_requests_in_a_stream_are_billed(recorder: Recorder) -> None:
    """Streamed, the search count is in the final ``message_delta`` usage only; it is still billed."""
    call = replay(recorder, WEB_SEARCH_STREAM, _client("claude-sonnet-4-6").bind_tools([WEB_SEARCH_TOOL]),
                  stream=True)
    assert_clean(call, recorder)
    assert call.streamed and call.finish_reason == "end_turn"
    assert (call.usage.input, call.usage.output, call.usage.web_searches) == (9876, 286, 1)
    _assert_raw(call, "stream", _stream_usage(WEB_SEARCH_STREAM))
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "claude-sonnet-4-6", "anthropic", input_tokens=9876,
                                           output_tokens=286, web_searches=1)
    assert call.cost.total == Decimal("0.043918")
    assert call.cost.detail is not None and "web_searches=1" in call.cost.detail
