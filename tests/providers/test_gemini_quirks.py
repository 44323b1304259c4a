"""Gemini quirk: audio input is billed at its own rate (for gemini-2.5-flash, more than three times the
text rate), cached or not. ``usageMetadata`` gives it per modality (``promptTokensDetails``,
``cacheTokensDetails``); langchain_google_genai keeps none of it, so the handler's shim must keep the
raw ``usageMetadata`` for the call to be priced as billed."""

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

langchain_google_genai = pytest.importorskip("langchain_google_genai")

AUDIO = "quirks_gemini_audio.yaml"
AUDIO_STREAM = "quirks_gemini_audio_stream.yaml"


def _client() -> Any:
    # The cassettes answer /v1beta/ URLs, as the recorded API does.
    return langchain_google_genai.ChatGoogleGenerativeAI(model="gemini-2.5-flash", google_api_key="test-key",
                                                         max_retries=0, api_version="v1beta")


def _assert_gemini_raw(call: Any, usage_metadata: dict[str, Any]) -> None:
    """The stored raw usage is the wire ``usageMetadata``, but for ``serviceTier``: the google-genai SDK
    (3.6) has no field for it and drops it before anyone downstream can see it."""
    raw = raw_usage(call)
    assert (raw["provider"], raw["shape"]) == ("google", "gemini")
    assert drop_none(raw["usage"]) == {k: v for k, v in usage_metadata.items() if k != "serviceTier"}


def test_audio_input_and_audio_cache_reads_are_priced_at_the_audio_rate(recorder: Recorder) -> None:
    """The AUDIO entries of ``promptTokensDetails`` / ``cacheTokensDetails`` land in ``input_audio`` /
    ``cache_audio_read`` and are priced at gemini-2.5-flash's audio rates, not the text ones."""
    call = replay(recorder, AUDIO, _client())
    assert_clean(call, recorder)
    assert (call.provider, call.model, call.finish_reason) == ("google_genai", "gemini-2.5-flash", "STOP")
    u = call.usage
    assert (u.input, u.cache_read, u.input_audio, u.cache_audio_read) == (6230, 4108, 6188, 4096)
    assert (u.output, u.reasoning) == (187 + 412, 412)
    _assert_gemini_raw(call, json_body(AUDIO)["usageMetadata"])
    billed = catalog_cost(call, "gemini-2.5-flash", "google", input_tokens=6230, cache_read_tokens=4108,
                          input_audio_tokens=6188, cache_audio_read_tokens=4096, output_tokens=599,
                          output_reasoning_tokens=412)
    as_text = catalog_cost(call, "gemini-2.5-flash", "google", input_tokens=6230, cache_read_tokens=4108,
                           output_tokens=599, output_reasoning_tokens=412)
    assert call.cost is not None
    assert call.cost.total == billed > as_text
    # Audio: 2092 x $1 + 4096 cached x $0.10; text: 30 x $0.30 + 12 cached x $0.03; output 599 x $2.50, per MTok.
    assert call.cost.total == Decimal("0.00400846")


def _assert_audio_stream(call: Any, recorder: Recorder) -> None:
    assert_clean(call, recorder)
    assert (call.model, call.finish_reason, call.streamed) == ("gemini-2.5-flash", "STOP", True)
    u = call.usage
    assert (u.input, u.cache_read, u.input_audio, u.cache_audio_read) == (2923, 2054, 2905, 2048)
    assert (u.output, u.reasoning) == (96 + 230, 230)
    _assert_gemini_raw(call, sse_data(AUDIO_STREAM)[-1]["usageMetadata"])
    assert call.cost is not None
    assert call.cost.total == catalog_cost(call, "gemini-2.5-flash", "google", input_tokens=2923,
                                           cache_read_tokens=2054, input_audio_tokens=2905,
                                           cache_audio_read_tokens=2048, output_tokens=326,
                                           output_reasoning_tokens=230)
    # Audio: 857 x $1 + 2048 cached x $0.10; text: 12 x $0.30 + 6 cached x $0.03; output 326 x $2.50, per MTok.
    assert call.cost.total == Decimal("0.00188058")


def test_audio_in_a_stream_is_priced_from_the_last_chunk(recorder: Recorder) -> None:
    """Streamed (``alt=sse``), each chunk's ``usageMetadata`` is cumulative: the call is billed once, from
    the last chunk's per-modality counts, audio at the audio rate."""
    call = replay(recorder, AUDIO_STREAM, _client(), stream=True)
    _assert_audio_stream(call, recorder)


async def test_audio_in_an_astream_is_priced_from_the_last_chunk(recorder: Recorder) -> None:
    """The same stream through ``astream`` in an async graph node: the same counts and price."""
    call = await areplay(recorder, AUDIO_STREAM, _client(), stream=True)
    _assert_audio_stream(call, recorder)
