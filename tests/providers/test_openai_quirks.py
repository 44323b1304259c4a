"""OpenAI Responses API quirks: the service tier that served the call selects the price (``flex`` is
half, ``priority`` double the standard rates), and every ``web_search_call`` output item is billed
per call on top of the tokens (the usage object does not count them)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.providers._replay import (
    Recorder,
    areplay,
    assert_clean,
    catalog_cost,
    json_body,
    raw_usage,
    replay,
    sse_data,
)

langchain_openai = pytest.importorskip("langchain_openai")

FLEX_STREAM = "quirks_openai_responses_flex_stream.yaml"
PRIORITY = "quirks_openai_responses_priority.yaml"
WEB_SEARCH = "quirks_openai_responses_web_search.yaml"


def _responses_client(**kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(model="gpt-5", api_key="sk-test", max_retries=0, use_responses_api=True,
                                       **kwargs)


def _completed_usage(cassette: str) -> dict[str, Any]:
    (done,) = [e for e in sse_data(cassette) if e["type"] == "response.completed"]
    usage = done["response"]["usage"]
    assert isinstance(usage, dict)
    return usage


def _assert_usage_metadata_kept(call: Any, wire_usage: dict[str, Any]) -> None:
    """langchain_openai keeps no raw usage object of a Responses call, so what is stored is LangChain's
    ``usage_metadata`` (shape ``langchain``), with the provider's totals."""
    raw = raw_usage(call)
    assert (raw["provider"], raw["shape"], raw["from"]) == ("openai", "langchain", "usage_metadata")
    kept = raw["usage"]
    assert (kept["input_tokens"], kept["output_tokens"], kept["total_tokens"]) == (
        wire_usage["input_tokens"], wire_usage["output_tokens"], wire_usage["total_tokens"])


def _assert_flex_call(call: Any, recorder: Recorder) -> None:
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.service_tier) == ("openai", "gpt-5-2025-08-07", "flex")
    assert call.streamed
    u = call.usage
    assert (u.input, u.cache_read, u.output, u.reasoning, u.total) == (1874, 1536, 612, 384, 2486)
    _assert_usage_metadata_kept(call, _completed_usage(FLEX_STREAM))
    flex = catalog_cost(call, "gpt-5", "openai", service_tier="flex", input_tokens=1874, cache_read_tokens=1536,
                        output_tokens=612, output_reasoning_tokens=384)
    standard = catalog_cost(call, "gpt-5", "openai", input_tokens=1874, cache_read_tokens=1536, output_tokens=612,
                            output_reasoning_tokens=384)
    assert call.cost is not None
    assert call.cost.total == flex
    assert flex < standard  # the tier's own prices, not the standard ones
    assert call.cost.detail is not None and "service_tier=flex" in call.cost.detail


def test_flex_stream_is_priced_at_flex_rates(recorder: Recorder) -> None:
    """A Responses stream served on the flex tier (``response.completed`` says so) records
    ``service_tier == "flex"`` and is priced at gpt-5's flex prices, which the cost detail names."""
    call = replay(recorder, FLEX_STREAM, _responses_client(service_tier="flex"), stream=True)
    _assert_flex_call(call, recorder)
    # 338 uncached x $0.625 + 1536 cached x $0.0625 + 612 output x $5, per million tokens.
    assert call.cost is not None and call.cost.total == Decimal("0.00336725")


async def test_flex_astream_is_priced_at_flex_rates(recorder: Recorder) -> None:
    """The same flex stream through ``astream`` in an async graph node records the same tier and price."""
    call = await areplay(recorder, FLEX_STREAM, _responses_client(service_tier="flex"), stream=True)
    _assert_flex_call(call, recorder)


def test_priority_tier_is_priced_at_priority_rates(recorder: Recorder) -> None:
    """A non-streamed Responses body with ``service_tier: "priority"`` is priced at the priority prices."""
    call = replay(recorder, PRIORITY, _responses_client(service_tier="priority"))
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.service_tier) == ("openai", "gpt-5-2025-08-07", "priority")
    u = call.usage
    assert (u.input, u.cache_read, u.output, u.reasoning) == (642, 0, 1187, 960)
    _assert_usage_metadata_kept(call, json_body(PRIORITY)["usage"])
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "gpt-5", "openai", service_tier="priority", input_tokens=642,
                                           output_tokens=1187, output_reasoning_tokens=960)
    # 642 input x $2.50 + 1187 output x $20, per million tokens (standard would be half).
    assert call.cost.total == Decimal("0.025345")
    assert call.cost.detail is not None and "service_tier=priority" in call.cost.detail


def test_web_search_calls_are_billed_per_call(recorder: Recorder) -> None:
    """Two ``web_search_call`` output items are two billed searches: ``usage.web_searches == 2`` and the
    cost is the tokens plus gpt-5's per-search fee, which the cost detail names."""
    llm = _responses_client().bind_tools([{"type": "web_search"}])
    call = replay(recorder, WEB_SEARCH, llm)
    assert_clean(call, recorder)
    assert (call.provider, call.model) == ("openai", "gpt-5-2025-08-07")
    u = call.usage
    assert (u.input, u.cache_read, u.output, u.reasoning, u.web_searches) == (11420, 9984, 845, 704, 2)
    _assert_usage_metadata_kept(call, json_body(WEB_SEARCH)["usage"])
    with_fees = catalog_cost(call, "gpt-5", "openai", input_tokens=11420, cache_read_tokens=9984, output_tokens=845,
                             output_reasoning_tokens=704, web_searches=2)
    assert with_fees > catalog_cost(call, "gpt-5", "openai", input_tokens=11420, cache_read_tokens=9984,
                                    output_tokens=845, output_reasoning_tokens=704)
    assert call.cost is not None
    assert call.cost.total == with_fees
    # 1436 x $1.25 + 9984 x $0.125 + 845 x $10 per million tokens, plus 2 searches x $10 per thousand.
    assert call.cost.total == Decimal("0.031493")
    assert call.cost.detail is not None and "web_searches=2" in call.cost.detail
