"""Token counts that are not JSON numbers. Some gateways re-serialise usage with numeric strings
(``"prompt_tokens": "120"``): they must be read as numbers; a broken one may send ``"n/a"``, which must
be flagged (an estimate, counted as unreadable usage), never read as a silent 0.

Where the strings are seen depends on the client: the openai SDK coerces ``"120"`` to 120 while
parsing the body, so ``ChatOpenAI`` hands the handler numbers; ``ChatMistralAI`` passes the body's
``usage`` dict through untouched, so the handler itself reads the strings."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage
from genai_prices.types import ModelPrice

from tests.providers._replay import Recorder, assert_clean, catalog_cost, raw_usage, replay
from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler

langchain_openai = pytest.importorskip("langchain_openai")
langchain_mistralai = pytest.importorskip("langchain_mistralai")

STRING_COUNTS = "quirks_gateway_string_tokens.yaml"
GARBAGE_COUNTS = "quirks_gateway_garbage_tokens.yaml"
MISTRAL_STRING_COUNTS = "quirks_gateway_mistral_string_tokens.yaml"
GATEWAY = "https://llm-gateway.acme-internal.net/v1"
MODEL = "qwen2.5-32b-instruct"
GATEWAY_PRICE = ModelPrice(input_mtok=Decimal("0.40"), output_mtok=Decimal("0.80"))
OVERRIDE = f"""\
models:
  - provider: openai-compatible
    model: {MODEL}
    prices:
      - effective_from: 2026-01-01
        input_mtok: 0.40
        output_mtok: 0.80
"""


@pytest.fixture
def gateway_recorder(tmp_path: Path) -> Iterator[Recorder]:
    """A recorder whose handler prices the gateway's model with a ``pricing/`` override."""
    (tmp_path / "gateway.yaml").write_text(OVERRIDE, encoding="utf-8")
    sink = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, pricing_dir=tmp_path), sinks=[sink])
    yield Recorder(sink, handler)
    handler.shutdown()


def _gateway_client() -> Any:
    return langchain_openai.ChatOpenAI(model=MODEL, api_key="sk-gw-test", max_retries=0, base_url=GATEWAY)


def _mistral_via_gateway() -> Any:
    return langchain_mistralai.ChatMistralAI(model="mistral-medium-latest", api_key="gw-test", max_retries=0,
                                             endpoint=GATEWAY)


def test_numeric_strings_through_chat_openai_are_counted(gateway_recorder: Recorder) -> None:
    """``"prompt_tokens": "120"`` / ``"completion_tokens": "45"`` from an OpenAI-compatible gateway are 120
    and 45 provider-reported tokens (the openai SDK already made them numbers), priced by the override."""
    call = replay(gateway_recorder, STRING_COUNTS, _gateway_client())
    assert_clean(call, gateway_recorder)
    assert (call.provider, call.model) == ("openai-compatible", MODEL)
    assert (call.usage.input, call.usage.output, call.usage.total) == (120, 45, 165)
    raw = raw_usage(call)
    assert raw["shape"] == "openai-chat"
    assert (raw["usage"]["prompt_tokens"], raw["usage"]["completion_tokens"]) == (120, 45)
    assert call.cost is not None and call.cost.source == "override:gateway.yaml"
    assert call.cost.total == GATEWAY_PRICE.calc_price(Usage(input_tokens=120, output_tokens=45))["total_price"]
    assert call.cost.total == Decimal("0.000084")  # 120 x $0.40 + 45 x $0.80 per million tokens
    assert gateway_recorder.handler.stats()["unreadable_usage"] == 0


def test_numeric_strings_reaching_the_handler_are_read(recorder: Recorder) -> None:
    """Through ``ChatMistralAI`` the strings reach the handler as they were sent (``"3120"``): they are
    read as 3120 in / 94 out provider-reported tokens, and the raw usage kept shows them as sent."""
    call = replay(recorder, MISTRAL_STRING_COUNTS, _mistral_via_gateway())
    assert_clean(call, recorder)
    assert (call.provider, call.model) == ("mistral", "mistral-medium-latest")
    assert (call.usage.input, call.usage.output, call.usage.total) == (3120, 94, 3214)
    kept = raw_usage(call)["usage"]
    assert "3120" in (kept.get("prompt_tokens"), kept.get("input_tokens"))  # as sent, whichever object was kept
    assert recorder.handler.stats()["unreadable_usage"] == 0


def test_numeric_string_cache_counts_are_cache_reads(recorder: Recorder) -> None:
    """``"cached_tokens": "2816"`` (a string, in ``prompt_tokens_details``) is 2816 cache reads, priced at
    the cache-read rate, exactly as the same count sent as a number is (test_mistral_quirks)."""
    call = replay(recorder, MISTRAL_STRING_COUNTS, _mistral_via_gateway())
    assert_clean(call, recorder)
    assert (call.usage.input, call.usage.output) == (3120, 94)
    assert call.usage.cache_read == 2816
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "mistral-medium-latest", "mistral", input_tokens=3120,
                                           cache_read_tokens=2816, output_tokens=94)


def test_garbage_counts_are_flagged_as_an_estimate(gateway_recorder: Recorder) -> None:
    """``"prompt_tokens": "n/a"`` cannot be read: the call is counted as unreadable usage, its tokens
    are a tiktoken estimate flagged ``token_source == "estimate"`` (not 0, and not the readable 45 next
    to it taken on trust), and its cost is the override's price of that estimate."""
    call = replay(gateway_recorder, GARBAGE_COUNTS, _gateway_client())
    stats = gateway_recorder.handler.stats()
    assert call.status == "success" and stats["handler_errors"] == 0
    assert call.token_source == "estimate"
    assert stats["unreadable_usage"] == 1 and stats["estimated_calls"] == 1
    u = call.usage
    assert u.input > 0 and u.output > 0 and u.total == u.input + u.output
    assert u.output != 45
    assert call.cost is not None and call.cost.source == "override:gateway.yaml"
    assert call.cost.total == GATEWAY_PRICE.calc_price(Usage(input_tokens=u.input, output_tokens=u.output))[
        "total_price"]


def test_garbage_counts_keep_the_raw_usage_for_audit(gateway_recorder: Recorder) -> None:
    """The provider carried a usage object, unreadable as it was: it is kept in ``raw_usage`` (as sent,
    ``"n/a"`` included), so an estimated call can be audited."""
    call = replay(gateway_recorder, GARBAGE_COUNTS, _gateway_client())
    assert call.token_source == "estimate"
    assert raw_usage(call)["usage"]["prompt_tokens"] == "n/a"
