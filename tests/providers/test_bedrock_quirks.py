"""AWS Bedrock Converse quirks: the finish reason arrives as camelCase ``stopReason`` (in the body, or in
a stream's ``messageStop`` event), and ``usage.inputTokens`` excludes the cache, which comes as
``cacheReadInputTokens`` / ``cacheWriteInputTokens``: input is their sum, each part priced at its own
rate. The stream is AWS eventstream binary framing, encoded from the cassette's readable events."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain_core.tools import tool

from tests.providers._replay import (
    Recorder,
    assert_clean,
    catalog_cost,
    eventstream_events,
    json_body,
    raw_usage,
    replay,
)

langchain_aws = pytest.importorskip("langchain_aws")

CONVERSE = "quirks_bedrock_converse_cache.yaml"
CONVERSE_STREAM = "quirks_bedrock_converse_stream.yaml"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


@tool
def get_order_status(order_id: str) -> str:
    """The shipping status of an order."""
    return f"{order_id}: in transit"


def _client(model: str) -> Any:
    return langchain_aws.ChatBedrockConverse(model=model, region_name="us-east-1", aws_access_key_id="AKIDTEST",
                                             aws_secret_access_key="secret-test")


def _assert_raw(call: Any, wire: dict[str, Any]) -> None:
    """langchain_aws keeps no raw usage object LangChain-side that the handler reads; the stored raw
    usage is LangChain's ``usage_metadata``, with the provider's billed totals."""
    raw = raw_usage(call)
    assert (raw["provider"], raw["shape"], raw["from"]) == ("aws", "langchain", "usage_metadata")
    kept = raw["usage"]
    inputs = wire["inputTokens"] + wire["cacheReadInputTokens"] + wire["cacheWriteInputTokens"]
    assert (kept["input_tokens"], kept["output_tokens"], kept["total_tokens"]) == (
        inputs, wire["outputTokens"], wire["totalTokens"])


def test_converse_stop_reason_and_cache_tokens(recorder: Recorder) -> None:
    """A Converse JSON body: ``stopReason: "end_turn"`` becomes the finish reason; input is
    47 + 3584 cache-read + 1210 cache-write tokens, each priced at the profile's own rates."""
    call = replay(recorder, CONVERSE, _client(SONNET))
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("amazon_bedrock", SONNET, "end_turn")
    u = call.usage
    assert (u.input, u.cache_read, u.cache_write, u.output, u.total) == (4841, 3584, 1210, 233, 5074)
    _assert_raw(call, json_body(CONVERSE)["usage"])
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, SONNET, "aws", input_tokens=4841, cache_read_tokens=3584,
                                           cache_write_tokens=1210, output_tokens=233)
    # 47 x $3.30 + 3584 x $0.33 + 1210 x $4.125 + 233 x $16.50, per million tokens (regional profile).
    assert call.cost.total == Decimal("0.01017357")


def test_converse_stream_tool_use_stop_reason_and_cache_read(recorder: Recorder) -> None:
    """A ConverseStream ending in a tool call: ``messageStop``'s ``stopReason: "tool_use"`` is the finish
    reason, and the ``metadata`` event's usage (312 + 2048 cache-read in, 88 out) is billed."""
    events = eventstream_events(CONVERSE_STREAM)  # the encoder's frames decode back, CRCs checked
    assert [name for name, _ in events][-2:] == ["messageStop", "metadata"]
    call = replay(recorder, CONVERSE_STREAM, _client(HAIKU).bind_tools([get_order_status]), stream=True,
                  serializer="eventstream")
    assert_clean(call, recorder)
    assert (call.model, call.finish_reason, call.streamed) == (HAIKU, "tool_use", True)
    u = call.usage
    assert (u.input, u.cache_read, u.cache_write, u.output) == (2360, 2048, 0, 88)
    _assert_raw(call, events[-1][1]["usage"])
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, HAIKU, "aws", input_tokens=2360, cache_read_tokens=2048,
                                           output_tokens=88)
    # 312 x $1.10 + 2048 x $0.11 + 88 x $5.50, per million tokens (regional profile).
    assert call.cost.total == Decimal("0.00105248")
