"""Reading a result in one pass gives what the separate readers give, for every shape we know."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from vital_callbacks.providers.usage import (
    ResultSnapshot,
    as_snapshot,
    capture,
    extract_usage,
    finish_reason,
    is_cache_hit,
    read,
    response_model,
    snapshot,
)

OPENAI = AIMessage("hi", usage_metadata={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150,
                                         "input_token_details": {"cache_read": 100},
                                         "output_token_details": {"reasoning": 10}},
                   response_metadata={"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "stop"})
ANTHROPIC_TTL = AIMessage("hi", usage_metadata={"input_tokens": 500, "output_tokens": 20, "total_tokens": 520,
                                                "input_token_details": {"cache_creation": 0,
                                                                        "ephemeral_1h_input_tokens": 300}},
                          response_metadata={"model": "claude-haiku-4-5", "stop_reason": "end_turn"})
CACHED = AIMessage("hi", usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2, "total_cost": 0})
NO_USAGE = AIMessage("streamed without usage", response_metadata={})
PLAIN = ChatMessage(content="no usage field at all", role="assistant")

RESULTS: dict[str, LLMResult] = {
    "openai": LLMResult(generations=[[ChatGeneration(message=OPENAI)]]),
    "anthropic ttl": LLMResult(generations=[[ChatGeneration(message=ANTHROPIC_TTL)]]),
    "cache hit": LLMResult(generations=[[ChatGeneration(message=CACHED)]]),
    "no usage": LLMResult(generations=[[ChatGeneration(message=NO_USAGE)]]),
    "not an AIMessage": LLMResult(generations=[[ChatGeneration(message=PLAIN)]]),
    "legacy llm_output": LLMResult(generations=[[ChatGeneration(message=NO_USAGE)]],
                                   llm_output={"token_usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                                               "total_tokens": 12}, "model_name": "gpt-4o"}),
    "completion model": LLMResult(generations=[[Generation(text="x", generation_info={"finish_reason": "length"})]],
                                  llm_output={"token_usage": {"prompt_tokens": 4, "completion_tokens": 5}}),
    "two generations": LLMResult(generations=[[ChatGeneration(message=OPENAI)], [ChatGeneration(message=OPENAI)]]),
}


@pytest.mark.parametrize("name", list(RESULTS))
def test_one_pass_reading_equals_the_separate_readers(name: str) -> None:
    result = snapshot(RESULTS[name])
    assert result is not None
    separate = (extract_usage(result), response_model(result), is_cache_hit(result), finish_reason(result))
    assert tuple(read(result))[:4] == separate  # the billing details (tier, parts, raw usage) come after


@pytest.mark.parametrize("name", list(RESULTS))
def test_capture_then_as_snapshot_equals_a_snapshot(name: str) -> None:
    """What the hot path keeps (often just a reference to the message) reads back as the full snapshot."""
    output, llm_output = capture(RESULTS[name])
    assert as_snapshot(output, llm_output) == snapshot(RESULTS[name])


def test_capture_keeps_the_message_itself_for_one_chat_generation() -> None:
    """No new object on the hot path for the usual result; a snapshot for anything else."""
    output, _ = capture(RESULTS["openai"])
    assert output is OPENAI
    output, _ = capture(RESULTS["two generations"])
    assert isinstance(output, ResultSnapshot) and output.items == (OPENAI, OPENAI)


def test_non_results_capture_nothing() -> None:
    odd: Any = {"not": "a result"}
    assert capture(odd) == (None, None) and as_snapshot(*capture(odd)) is None
