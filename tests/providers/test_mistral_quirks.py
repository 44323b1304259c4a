"""Mistral quirk: cached prompt tokens come as ``usage.prompt_tokens_details.cached_tokens``, which
langchain_mistralai leaves out of ``usage_metadata``: read from the raw usage, they are cache reads,
billed at the cache-read rate (a tenth of the input rate for mistral-medium)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.providers._replay import Recorder, assert_clean, catalog_cost, json_body, raw_usage, replay

langchain_mistralai = pytest.importorskip("langchain_mistralai")

CACHED = "quirks_mistral_cached.yaml"


def test_cached_tokens_are_cache_reads(recorder: Recorder) -> None:
    """2816 of the 3120 prompt tokens were cached: ``usage.cache_read == 2816``, priced at the cache rate."""
    llm = langchain_mistralai.ChatMistralAI(model="mistral-medium-latest", api_key="test-key", max_retries=0)
    call = replay(recorder, CACHED, llm, graph=False)  # called directly, outside any graph
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("mistral", "mistral-medium-latest", "stop")
    assert (call.usage.input, call.usage.cache_read, call.usage.output, call.usage.total) == (3120, 2816, 94, 3214)
    raw = raw_usage(call)
    assert (raw["provider"], raw["shape"]) == ("mistral", "openai-chat")
    assert raw["usage"] == json_body(CACHED)["usage"]
    with_cache = catalog_cost(call, "mistral-medium-latest", "mistral", input_tokens=3120, cache_read_tokens=2816,
                              output_tokens=94)
    assert with_cache < catalog_cost(call, "mistral-medium-latest", "mistral", input_tokens=3120, output_tokens=94)
    assert call.cost is not None
    assert call.cost.total == with_cache
    # 304 x $1.50 + 2816 x $0.15 + 94 x $7.50, per million tokens.
    assert call.cost.total == Decimal("0.0015834")
