"""Recorded provider responses replayed through the real langchain-openai / langchain-anthropic clients."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import vcr
from genai_prices import Usage, calc_price

from vital_callbacks import InMemorySink, LLMCall, VitalCallbackHandler

CASSETTES = Path(__file__).parent / "cassettes"
langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")


def _one_call(sink: InMemorySink, handler: VitalCallbackHandler) -> LLMCall:
    assert handler.flush()
    (call,) = sink.of(LLMCall)
    return call


def _catalog(call: LLMCall, model: str, provider: str, **usage: int) -> Decimal:
    when = datetime.fromtimestamp(call.start_time, tz=timezone.utc)
    return calc_price(Usage(**usage), model, provider_id=provider, genai_request_timestamp=when).total_price


@pytest.fixture
def recorder() -> tuple[InMemorySink, VitalCallbackHandler]:
    sink = InMemorySink()
    return sink, VitalCallbackHandler(sinks=[sink])


def test_openai_cached_and_reasoning_tokens(recorder: tuple[InMemorySink, VitalCallbackHandler]) -> None:
    """OpenAI's cached_tokens and reasoning_tokens land as cache-read and reasoning, priced without double counting."""
    sink, handler = recorder
    with vcr.use_cassette(str(CASSETTES / "openai_chat_cached_reasoning.yaml"), record_mode="none") as cassette:
        llm = langchain_openai.ChatOpenAI(model="o3-mini", api_key="sk-test", max_retries=0)
        llm.invoke("hi", config={"callbacks": [handler]})
        assert cassette.play_count == 1
    call = _one_call(sink, handler)
    assert (call.provider, call.requested_model, call.model) == ("openai", "o3-mini", "o3-mini-2025-01-31")
    u = call.usage
    assert (u.input, u.output, u.total, u.cache_read, u.reasoning) == (1200, 350, 1550, 1024, 256)
    assert call.token_source == "provider" and call.finish_reason == "stop"
    assert call.cost is not None
    # 176 uncached x $1.10 + 1024 cached x $0.55 + 350 output x $4.40, per million tokens.
    assert call.cost.total == Decimal("0.0022968")
    assert call.cost.total == _catalog(call, "o3-mini", "openai", input_tokens=1200, cache_read_tokens=1024,
                                       output_tokens=350)


def test_openai_streamed_usage_and_time_to_first_token(recorder: tuple[InMemorySink, VitalCallbackHandler]) -> None:
    """A streamed OpenAI response with include_usage records provider usage and a time to first token."""
    sink, handler = recorder
    with vcr.use_cassette(str(CASSETTES / "openai_chat_stream_usage.yaml"), record_mode="none"):
        llm = langchain_openai.ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", max_retries=0, streaming=True,
                                          stream_usage=True)
        for _ in llm.stream("hi", config={"callbacks": [handler]}):
            pass
    call = _one_call(sink, handler)
    assert call.model == "gpt-4o-mini-2024-07-18" and call.streamed
    assert call.time_to_first_token_s is not None and 0 <= call.time_to_first_token_s <= call.duration_s
    assert (call.usage.input, call.usage.output, call.token_source) == (40, 12, "provider")
    assert call.cost is not None
    assert call.cost.total == _catalog(call, "gpt-4o-mini", "openai", input_tokens=40, output_tokens=12)


def test_anthropic_cache_read_and_write(recorder: tuple[InMemorySink, VitalCallbackHandler]) -> None:
    """Anthropic's separate cache counts become part of input (once) and are billed at cache prices."""
    sink, handler = recorder
    with vcr.use_cassette(str(CASSETTES / "anthropic_messages_cache.yaml"), record_mode="none"):
        llm = langchain_anthropic.ChatAnthropic(model="claude-sonnet-4-5-20250929", api_key="sk-ant-test",
                                                max_retries=0)
        llm.invoke("hi", config={"callbacks": [handler]})
    call = _one_call(sink, handler)
    assert call.provider == "anthropic" and call.model == "claude-sonnet-4-5-20250929"
    u = call.usage
    assert (u.input, u.cache_read, u.cache_write, u.output) == (4550, 3000, 1500, 200)
    assert call.finish_reason == "end_turn"
    assert call.cost is not None
    # 50 x $3 + 3000 x $0.30 + 1500 x $3.75 input, 200 x $15 output, per million tokens.
    assert call.cost.total == Decimal("0.009675")
    assert call.cost.total == _catalog(call, "claude-sonnet-4-5-20250929", "anthropic", input_tokens=4550,
                                       cache_read_tokens=3000, cache_write_tokens=1500, output_tokens=200)


def test_anthropic_ttl_split_cache_writes(recorder: tuple[InMemorySink, VitalCallbackHandler]) -> None:
    """Cache writes reported per TTL (ephemeral_5m/1h, with cache_creation 0) still count as cache writes."""
    sink, handler = recorder
    with vcr.use_cassette(str(CASSETTES / "anthropic_messages_thinking.yaml"), record_mode="none"):
        llm = langchain_anthropic.ChatAnthropic(model="claude-sonnet-4-5-20250929", api_key="sk-ant-test",
                                                max_retries=0)
        llm.invoke("hi", config={"callbacks": [handler]})
    call = _one_call(sink, handler)
    assert (call.usage.input, call.usage.cache_read, call.usage.cache_write) == (4546, 3000, 1500)
    assert call.cost is not None
    assert call.cost.total == _catalog(call, "claude-sonnet-4-5-20250929", "anthropic", input_tokens=4546,
                                       cache_read_tokens=3000, cache_write_tokens=1500, output_tokens=96)
