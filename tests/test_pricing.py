"""Prices: the catalog at call time, overrides, provider mapping, and no made-up numbers."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from tests.graphs import INPUT, METADATA, build_graph
from vital_callbacks import InMemorySink, LLMCall, PriceBook, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.pricing.book import candidates
from vital_callbacks.pricing.overrides import PricingFileError, load_file
from vital_callbacks.testing.fakes import ScriptedChatModel

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_reference_graph_costs_equal_the_catalog(handler: VitalCallbackHandler, memory_sink: InMemorySink) -> None:
    """Each call's cost equals genai-prices for the same usage and timestamp, exactly."""
    build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    handler.flush()
    calls = {c.node: c for c in memory_sink.of(LLMCall)}
    plan, draft = calls["plan"], calls["draft"]
    at = datetime.fromtimestamp(plan.start_time, tz=timezone.utc)
    expected_plan = calc_price(Usage(input_tokens=1200, cache_read_tokens=1024, output_tokens=350), "o3-mini",
                               provider_id="openai", genai_request_timestamp=at)
    assert plan.cost is not None and plan.cost.total == expected_plan.total_price
    assert plan.cost.input == expected_plan.input_price and plan.cost.output == expected_plan.output_price
    expected_draft = calc_price(Usage(input_tokens=400, output_tokens=120), "claude-sonnet-4-5",
                                provider_id="anthropic", genai_request_timestamp=at)
    assert draft.cost is not None and draft.cost.total == expected_draft.total_price


def test_price_in_force_at_call_time() -> None:
    """A catalog price change applies from its date on: before it, the older price is charged."""
    book = PriceBook()
    big = TokenUsage(input=300_000, output=1000, total=301_000)  # above Claude's 200k long-context tier
    before = book.price("anthropic", "claude-sonnet-4-6", big, datetime(2026, 3, 1, tzinfo=timezone.utc))
    after = book.price("anthropic", "claude-sonnet-4-6", big, datetime(2026, 4, 1, tzinfo=timezone.utc))
    assert before is not None and after is not None
    assert before.total == Decimal("1.8225")  # 300k x $6 + 1k x $22.50: the long-context tier
    assert after.total == Decimal("0.915")  # 300k x $3 + 1k x $15: flat pricing from 2026-03-13


def test_unknown_model_is_null_with_one_warning(memory_sink: InMemorySink, caplog: pytest.LogCaptureFixture) -> None:
    """An unknown model is stored with cost null, warned about once, and counted, never priced at $0."""
    handler = VitalCallbackHandler(sinks=[memory_sink])
    model = ScriptedChatModel(model_name="acme-private-llm-v9", provider="acme")
    with caplog.at_level(logging.WARNING, logger="vital_callbacks"):
        model.invoke("one", config={"callbacks": [handler]})
        model.invoke("two", config={"callbacks": [handler]})
        handler.flush()
    calls = memory_sink.of(LLMCall)
    assert len(calls) == 2 and all(c.cost is None and c.usage.input > 0 for c in calls)
    warnings = [r for r in caplog.records if "acme-private-llm-v9" in r.getMessage()]
    assert len(warnings) == 1
    assert handler.stats()["unpriced_calls"] == {"acme-private-llm-v9": 2}
    handler.shutdown()


OVERRIDE = """
models:
  - provider: openai
    model: o3-mini
    prices:
      - input_mtok: 1.00
        output_mtok: 4.00
        cache_read_mtok: 0.25
      - effective_from: 2026-06-01
        input_mtok: 2.00
        output_mtok: 8.00
        cache_read_mtok: 0.50
  - provider: ollama
    model: llama3.1:70b
    aliases: [meta-llama/Llama-3.1-70B-Instruct]
    prices:
      - input_mtok: 0.20
        output_mtok: 0.60
  - provider: anthropic
    model: claude-sonnet-4-5
    prices:
      - discount: 0.10
"""


@pytest.fixture
def override_dir(tmp_path: Path) -> Path:
    (tmp_path / "negotiated.yml").write_text(OVERRIDE)
    return tmp_path


def test_override_takes_precedence_with_effective_dates(override_dir: Path) -> None:
    """A pricing/ override beats the catalog, and its latest entry in force at call time applies."""
    book = PriceBook([override_dir])
    usage = TokenUsage(input=1200, output=350, total=1550, cache_read=1024)
    old = book.price("openai", "o3-mini", usage, datetime(2026, 1, 1, tzinfo=timezone.utc))
    new = book.price("openai", "o3-mini", usage, datetime(2026, 7, 1, tzinfo=timezone.utc))
    assert old is not None and new is not None
    assert old.total == (176 * Decimal("1.00") + 1024 * Decimal("0.25") + 350 * Decimal("4.00")) / 1_000_000
    assert new.total == old.total * 2
    assert old.source == "override:negotiated.yml"


def test_override_prices_go_through_the_catalogs_formula(tmp_path: Path) -> None:
    """Explicit override prices are priced by genai-prices' own formula: a reasoning price bills the reasoning
    part of the output at its rate, and cache reads without a price of their own bill at the input rate."""
    (tmp_path / "reasoning.yml").write_text(
        "models:\n  - provider: ollama\n    model: thinker\n    prices:\n"
        "      - {input_mtok: 1.00, output_mtok: 2.00, reasoning_mtok: 5.00}\n")
    usage = TokenUsage(input=1000, output=1000, total=2000, cache_read=200, reasoning=400)
    cost = PriceBook([tmp_path]).price("ollama", "thinker", usage, NOW)
    assert cost is not None
    assert cost.input == Decimal(1000) * Decimal("1.00") / 1_000_000
    assert cost.output == (600 * Decimal("2.00") + 400 * Decimal("5.00")) / 1_000_000


def test_override_prices_self_hosted_and_discounts(override_dir: Path) -> None:
    """Self-hosted models are priced by override (also by alias); a discount scales the catalog price."""
    book = PriceBook([override_dir])
    usage = TokenUsage(input=1_000_000, output=1_000_000, total=2_000_000)
    hosted = book.price("ollama", "meta-llama/Llama-3.1-70B-Instruct", usage, NOW)
    assert hosted is not None and hosted.total == Decimal("0.80")
    listed = PriceBook().price("anthropic", "claude-sonnet-4-5", usage, NOW)
    discounted = book.price("anthropic", "claude-sonnet-4-5", usage, NOW)
    assert listed is not None and discounted is not None
    assert discounted.total == listed.total * Decimal("0.90")
    assert PriceBook().price("ollama", "llama3.1:70b", usage, NOW) is None


def test_override_through_the_handler(override_dir: Path, memory_sink: InMemorySink) -> None:
    """VITAL_PRICING_DIR overrides reach the costs the handler records."""
    handler = VitalCallbackHandler(Settings(pricing_dir=override_dir), sinks=[memory_sink])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    handler.flush()
    plan = next(c for c in memory_sink.of(LLMCall) if c.node == "plan")
    assert plan.cost is not None and plan.cost.source == "override:negotiated.yml"
    handler.shutdown()


def test_bad_pricing_file_names_the_file(tmp_path: Path) -> None:
    """A malformed override file is rejected with its path in the message."""
    bad = tmp_path / "bad.yml"
    bad.write_text("models:\n  - provider: openai\n    model: x\n    prices:\n      - input_mtok: 1\n        typo: 2\n")
    with pytest.raises(PricingFileError, match=r"bad\.yml"):
        load_file(bad)


def test_shipped_pricing_folder_is_valid() -> None:
    """The pricing/ folder that ships in the wheel loads."""
    PriceBook()


@pytest.mark.parametrize(("provider", "model", "catalog_provider"), [
    ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws"),
    ("google_genai", "gemini-2.5-flash", "google"),
    ("google_vertexai", "gemini-2.5-flash", "google"),
    ("azure_openai", "gpt-4o", "azure"),
    ("mistralai", "mistral-large-latest", "mistral"),
    ("openai", "openai/gpt-4o", "openai"),
])
def test_langchain_provider_names_map_to_the_catalog(provider: str, model: str, catalog_provider: str) -> None:
    """LangChain's ls_provider names and router prefixes find the catalog's provider."""
    quote = PriceBook().quote(provider, model, TokenUsage(input=1000, output=100, total=1100), NOW)
    assert quote is not None and quote.provider == catalog_provider


def test_router_prefix_is_stripped() -> None:
    """OpenRouter-style ``openai/gpt-4o`` under a provider that does not know it falls back to the model."""
    assert ("openai", "gpt-4o") in candidates("openai", "openai/gpt-4o")
