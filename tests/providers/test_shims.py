"""The shims' promise: they keep the provider's usage object and change nothing else; they never raise
into the user's call, whatever the integration hands them; they wrap once."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from pydantic import SecretStr

from vital_callbacks.providers import shims
from vital_callbacks.providers.billing import STREAM_USAGE_KEY


class Usage:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def model_dump(self, **_: Any) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("an SDK object that cannot be dumped")
        return {"promptTokenCount": 10, "candidatesTokenCount": 2}


class Candidate:
    def __init__(self, finish_reason: str | None) -> None:
        self.finish_reason = finish_reason


class Response:
    def __init__(self, usage: Any, finish_reason: str | None) -> None:
        self.usage_metadata = usage
        self.candidates = [Candidate(finish_reason)]


class Result:
    def __init__(self) -> None:
        self.generations = [types.SimpleNamespace(message=AIMessage("hi"))]


@pytest.fixture
def fake_gemini(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in for ``langchain_google_genai.chat_models`` with the function the shim wraps."""
    module = types.ModuleType("langchain_google_genai.chat_models")
    returned: list[Result] = []

    def _response_to_result(response: Any, stream: bool = False, prev_usage: Any = None) -> Result:
        result = Result()
        returned.append(result)
        return result

    module._response_to_result = _response_to_result  # type: ignore[attr-defined]
    module.returned = returned  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langchain_google_genai.chat_models", module)
    return module


def test_the_gemini_shim_keeps_the_usage_and_returns_the_same_result(fake_gemini: types.ModuleType) -> None:
    assert shims._google()
    wrapped = fake_gemini._response_to_result
    result = wrapped(Response(Usage(), "STOP"))
    assert result is fake_gemini.returned[-1]  # the very object the integration returned
    message = result.generations[0].message
    assert message.response_metadata[STREAM_USAGE_KEY] == [{"promptTokenCount": 10, "candidatesTokenCount": 2}]
    assert message.content == "hi"


def test_a_stream_keeps_only_the_final_chunks_usage(fake_gemini: types.ModuleType) -> None:
    """Gemini's counts are cumulative: the chunk that finishes the stream has them all."""
    shims._google()
    middle = fake_gemini._response_to_result(Response(Usage(), None), True)
    last = fake_gemini._response_to_result(Response(Usage(), "STOP"), stream=True)
    assert STREAM_USAGE_KEY not in middle.generations[0].message.response_metadata
    assert STREAM_USAGE_KEY in last.generations[0].message.response_metadata


@pytest.mark.parametrize("response", [Response(Usage(fail=True), "STOP"), Response(object(), "STOP"),
                                      types.SimpleNamespace(), None])
def test_the_gemini_shim_never_raises_into_the_call(fake_gemini: types.ModuleType, response: Any) -> None:
    shims._google()
    result = fake_gemini._response_to_result(response)
    assert result is fake_gemini.returned[-1]
    assert STREAM_USAGE_KEY not in result.generations[0].message.response_metadata


def test_a_shim_wraps_once(fake_gemini: types.ModuleType) -> None:
    shims._google()
    first = fake_gemini._response_to_result
    assert shims._google()
    assert fake_gemini._response_to_result is first


def test_no_integration_no_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not imported (yet): nothing is wrapped and the next call tries again."""
    monkeypatch.delitem(sys.modules, "langchain_google_genai.chat_models", raising=False)
    assert shims._google() is False


def test_the_anthropic_shim_never_raises_into_the_stream() -> None:
    """The real langchain_anthropic method, wrapped: an event the shim cannot read is passed through."""
    from langchain_anthropic import ChatAnthropic

    shims.install("anthropic")
    method = ChatAnthropic._make_message_chunk_from_anthropic_event
    assert getattr(method, "__vital_shim__", False)
    model = ChatAnthropic(model="claude-sonnet-4-5", api_key=SecretStr("sk-ant-test"))  # type: ignore[call-arg]
    odd: Any = types.SimpleNamespace(type="message_delta")  # no usage, no delta: the original itself fails
    with pytest.raises(AttributeError):  # the integration's own error, unchanged by the wrapper
        model._make_message_chunk_from_anthropic_event(odd, coerce_content_to_string=True)
    ping: Any = types.SimpleNamespace(type="ping")
    assert model._make_message_chunk_from_anthropic_event(ping, coerce_content_to_string=True) == (None, None)
