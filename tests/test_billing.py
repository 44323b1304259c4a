"""What a provider billed, read and priced: provider resolution, counts, billed parts, overrides on the
catalog's identity of a model. (tests/test_provider_quirks.py replays whole responses through the
real clients; these pin the rules themselves.)"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from vital_callbacks.core.events import TokenUsage
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.pricing.catalog_math import fast_cost
from vital_callbacks.providers.billing import (
    Part,
    UnreadableUsage,
    count,
    find_raw,
    provider_for,
    read_raw,
)
from vital_callbacks.providers.usage import reread

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(("ls_provider", "base_url", "expected"), [
    ("openai", "https://openrouter.ai/api/v1", "openrouter"),
    ("openai", "https://api.groq.com/openai/v1", "groq"),
    ("openai", "https://api.deepseek.com/v1", "deepseek"),
    ("openai", "https://api.x.ai/v1", "x-ai"),
    ("openai", "https://api.openai.com/v1", "openai"),
    ("openai", "http://127.0.0.1:8000/v1", "openai-compatible"),
    ("openai", "http://vllm.internal:8000/v1", "openai-compatible"),
    ("azure", "https://contoso.openai.azure.com", "azure"),
    ("anthropic", "https://api.anthropic.com", "anthropic"),
    ("mistral", "https://api.mistral.ai/v1", "mistral"),
    ("ollama", "http://localhost:11434", "ollama"),
])
def test_the_provider_is_where_the_request_went(ls_provider: str, base_url: str, expected: str) -> None:
    assert provider_for(ls_provider, base_url) == expected


def test_a_self_hosted_openai_compatible_model_is_never_priced_from_the_catalog() -> None:
    """``gpt-4o`` served by a local OpenAI-compatible server is not OpenAI's gpt-4o: unpriced, not list price."""
    book = PriceBook()
    usage = TokenUsage(input=1000, output=100, total=1100)
    assert book.price("openai", "gpt-4o", usage, NOW) is not None
    assert book.price("openai-compatible", "gpt-4o", usage, NOW) is None
    assert book.unpriced == {"gpt-4o": 1}


@pytest.mark.parametrize(("value", "expected"), [(12, 12), (12.0, 12), ("120", 120), (" 7 ", 7), (None, 0),
                                               (2**63 - 1, 2**63 - 1)])
def test_counts_are_numbers_or_numeric_strings(value: object, expected: int) -> None:
    assert count(value) == expected


@pytest.mark.parametrize("value", ["n/a", "", True, [1], {"n": 1}, -3, "-3", 2**63, float("nan"), float("inf"),
                                   "inf", "1e999"])
def test_a_count_that_is_not_a_number_is_flagged_never_zero(value: object) -> None:
    with pytest.raises(UnreadableUsage):
        count(value)


def test_raw_usage_is_found_where_each_integration_leaves_it() -> None:
    openai = {"prompt_tokens": 10, "completion_tokens": 2}
    anthropic = {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 100}
    assert find_raw({"token_usage": openai}, None) is not None
    assert find_raw({}, {"token_usage": openai}).where == "llm_output.token_usage"  # type: ignore[union-attr]
    assert find_raw({"usage": anthropic}, None).shape == "anthropic"  # type: ignore[union-attr]
    stream = {"vital_stream_usage": [{"input_tokens": 3, "output_tokens": 1}, {"output_tokens": 40}]}
    merged = find_raw(stream, None)
    assert merged is not None and merged.usage == {"input_tokens": 3, "output_tokens": 40}
    gemini = {"vital_stream_usage": [{"promptTokenCount": 5, "candidatesTokenCount": 1},
                                     {"promptTokenCount": 5, "candidatesTokenCount": 9}]}
    assert find_raw(gemini, None).usage["candidatesTokenCount"] == 9  # type: ignore[union-attr]
    assert find_raw({"model_name": "x"}, None) is None


def test_anthropic_iterations_are_billed_per_model() -> None:
    """Every iteration counts; an advisor iteration is priced at its own model's rate; the sum is the cost."""
    raw = find_raw({"usage": {
        "input_tokens": 1262, "output_tokens": 121, "output_tokens_details": {"thinking_tokens": 28},
        "iterations": [
            {"type": "message", "input_tokens": 1128, "output_tokens": 110},
            {"type": "advisor_message", "model": "claude-opus-4-1", "input_tokens": 2518, "output_tokens": 22},
            {"type": "message", "input_tokens": 1262, "output_tokens": 11},
        ]}}, None)
    assert raw is not None
    read = read_raw(raw, "anthropic", "claude-sonnet-4-5")
    assert read is not None
    usage, parts = read
    assert (usage.input, usage.output, usage.reasoning) == (1128 + 2518 + 1262, 110 + 22 + 11, 28)
    assert [p.model for p in parts] == [None, "claude-opus-4-1"]
    cost = PriceBook().price("anthropic", "claude-sonnet-4-5", usage, NOW, parts=parts)
    want = (calc_price(Usage(input_tokens=2390, output_tokens=121, output_reasoning_tokens=28), "claude-sonnet-4-5",
                       provider_id="anthropic", genai_request_timestamp=NOW).total_price
            + calc_price(Usage(input_tokens=2518, output_tokens=22), "claude-opus-4-1", provider_id="anthropic",
                         genai_request_timestamp=NOW).total_price)
    assert cost is not None and cost.total == want
    assert cost.detail is not None and "advisor_message@claude-opus-4-1" in cost.detail


def test_a_call_with_an_unpriced_part_is_unpriced_not_partly_priced() -> None:
    usage = TokenUsage(input=100, output=10, total=110)
    parts = (Part(None, usage), Part("some-private-advisor", usage, "advisor_message"))
    book = PriceBook()
    assert book.price("anthropic", "claude-sonnet-4-5", usage + usage, NOW, parts=parts) is None
    assert book.unpriced == {"some-private-advisor": 1}


def test_web_search_fees_are_charged_and_said() -> None:
    usage = TokenUsage(input=1000, output=100, total=1100, web_searches=2)
    cost = PriceBook().price("openai", "gpt-5", usage, NOW)
    plain = PriceBook().price("openai", "gpt-5", TokenUsage(input=1000, output=100, total=1100), NOW)
    assert cost is not None and plain is not None
    assert cost.total - plain.total == Decimal("0.02")  # $10 per thousand searches
    assert cost.detail == "web_searches=2"


def test_a_service_tier_selects_its_prices() -> None:
    usage = TokenUsage(input=1000, output=100, total=1100)
    flex = PriceBook().price("openai", "gpt-5-2025-08-07", usage, NOW, service_tier="flex")
    want = calc_price(Usage(input_tokens=1000, output_tokens=100), "gpt-5", provider_id="openai",
                      genai_request_timestamp=NOW, price_context={"service_tier": "flex"}).total_price
    default = PriceBook().price("openai", "gpt-5-2025-08-07", usage, NOW, service_tier="default")
    assert flex is not None and default is not None
    assert flex.total == want < default.total
    assert flex.detail == "service_tier=flex" and default.detail is None


def test_the_fast_path_leaves_audio_and_fees_to_calc_price() -> None:
    from genai_prices import data_snapshot

    _, model = data_snapshot.get_snapshot().find_provider_model("gpt-4o", None, "openai", None)
    price = model.get_prices(NOW)
    assert fast_cost(price, TokenUsage(input=10, output=1, total=11)) is not None
    for usage in (TokenUsage(input=10, output=1, total=11, input_audio=5),
                  TokenUsage(input=10, output=1, total=11, web_searches=1),
                  TokenUsage(input=10, output=1, total=11, cache_write=5, cache_write_1h=5)):
        assert fast_cost(price, usage) is None


def _override(tmp_path: Path, text: str) -> PriceBook:
    (tmp_path / "prices.yml").write_text(text)
    return PriceBook([tmp_path])


def test_an_override_for_a_family_applies_to_its_served_snapshot(tmp_path: Path) -> None:
    """A discount for ``gpt-4o`` prices ``gpt-4o-2024-08-06`` (what the API answers with); an override that
    names the snapshot itself wins over the family one."""
    usage = TokenUsage(input=1000, output=100, total=1100)
    catalog = PriceBook().price("openai", "gpt-4o-2024-08-06", usage, NOW)
    family = _override(tmp_path, "models:\n  - provider: openai\n    model: gpt-4o\n    prices:\n"
                                 "      - discount: 0.2\n")
    cost = family.price("openai", "gpt-4o-2024-08-06", usage, NOW)
    assert catalog is not None and cost is not None
    assert cost.total == catalog.total * Decimal("0.8") and cost.source == "override:prices.yml"
    quote = family.quote("openai", "gpt-4o-2024-08-06", usage, NOW)
    assert quote is not None and quote.cost == cost  # what `vital-callbacks prices` shows
    (tmp_path / "snapshot.yml").write_text(
        "models:\n  - provider: openai\n    model: gpt-4o-2024-08-06\n    prices:\n"
        "      - input_mtok: 1\n        output_mtok: 2\n")
    exact = PriceBook([tmp_path]).price("openai", "gpt-4o-2024-08-06", usage, NOW)
    assert exact is not None and exact.total == Decimal("0.0012") and exact.source == "override:snapshot.yml"


def test_stored_raw_usage_reads_back_to_the_same_usage() -> None:
    stored = json.dumps({"provider": "openai", "shape": "openai-chat", "from": "response_metadata.token_usage",
                         "usage": {"prompt_tokens": 1200, "completion_tokens": 350,
                                   "prompt_tokens_details": {"cached_tokens": 1024},
                                   "completion_tokens_details": {"reasoning_tokens": 256}}})
    read = reread(stored, "o3-mini")
    assert read is not None
    usage = read[0]
    assert (usage.input, usage.output, usage.cache_read, usage.reasoning) == (1200, 350, 1024, 256)
    langchain = json.dumps({"provider": "aws", "shape": "langchain", "from": "usage_metadata",
                            "usage": {"input_tokens": 50, "output_tokens": 5, "total_tokens": 55,
                                      "input_token_details": {"cache_read": 20}}})
    again = reread(langchain, "nova-lite")
    assert again is not None and again[0].cache_read == 20
    assert reread("not json", "x") is None


def test_a_tier_price_depends_on_the_provider_not_on_which_call_came_first() -> None:
    """Azure prices OpenAI's models as a fallback provider, where genai-prices applies no tier prices;
    OpenAI's own priority price must not leak to Azure or the other way round, in either order."""
    usage = TokenUsage(input=1_000_000, output=1_000_000, total=2_000_000)
    for order in (("azure", "openai"), ("openai", "azure")):
        import vital_callbacks.pricing.book as book_module

        book_module._tiers.clear()
        book = PriceBook()
        got = {provider: book.price(provider, "gpt-5", usage, NOW, service_tier="priority") for provider in order}
        for provider, cost in got.items():
            want = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), "gpt-5", provider_id=provider,
                              genai_request_timestamp=NOW, price_context={"service_tier": "priority"}).total_price
            assert cost is not None and cost.total == want, (order, provider)


def test_one_usage_object_for_several_choices_is_billed_once() -> None:
    """``n=2``: both messages point at the response's one ``llm_output.token_usage``; it is billed once
    (the per-message ``usage_metadata`` repeats the same totals and is not added up on top)."""
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    from vital_callbacks.providers.usage import read, snapshot

    token_usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    messages = [AIMessage("a", response_metadata={"model_name": "gpt-4o", "finish_reason": "stop"},
                          usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120})
                for _ in range(2)]
    result = snapshot(LLMResult(generations=[[ChatGeneration(message=m) for m in messages]],
                                llm_output={"token_usage": token_usage, "model_name": "gpt-4o"}))
    assert result is not None
    usage = read(result, "openai").usage
    assert usage is not None and (usage.input, usage.output) == (100, 20)


def test_a_gateway_is_priced_by_an_override_naming_it_and_only_so(tmp_path: Path) -> None:
    """Traffic through an OpenAI-compatible gateway is priced by an override for ``openai-compatible``,
    matched on the catalog's family (the gateway answers with the snapshot's name); an OpenAI discount
    does not price a self-hosted model of the same name."""
    usage = TokenUsage(input=1000, output=100, total=1100)
    catalog = PriceBook().price("openai", "gpt-4o-2024-08-06", usage, NOW)
    gateway = _override(tmp_path, "models:\n  - provider: openai-compatible\n    model: gpt-4o\n    prices:\n"
                                  "      - discount: 0\n")
    cost = gateway.price("openai-compatible", "gpt-4o-2024-08-06", usage, NOW)
    assert catalog is not None and cost is not None and cost.total == catalog.total
    assert cost.source == "override:prices.yml"
    openai_discount = PriceBook([_write(tmp_path / "openai", "models:\n  - provider: openai\n    model: gpt-4o\n"
                                                            "    prices:\n      - discount: 0.5\n")])
    assert openai_discount.price("openai-compatible", "gpt-4o-2024-08-06", usage, NOW) is None
    assert openai_discount.price("openai", "gpt-4o-2024-08-06", usage, NOW) is not None


def _write(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "prices.yml").write_text(text)
    return folder
