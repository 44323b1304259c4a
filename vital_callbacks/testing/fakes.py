"""Deterministic stand-ins for an LLM provider and a retriever, for the demo and for tests.

They go through LangChain's real ``BaseChatModel`` / ``BaseRetriever`` machinery (callbacks,
streaming, caching), so everything the handler sees is what a real provider integration produces;
only the network call is replaced.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, PrivateAttr


def _words(messages: Sequence[BaseMessage]) -> int:
    return sum(len(str(m.content).split()) for m in messages)


class ScriptedChatModel(BaseChatModel):
    """Answers from a script, reporting usage like a real provider (or not, with ``usage=None``).

    ``usage`` is a LangChain ``UsageMetadata`` dict to report on every call; by default usage is
    derived from the word counts so it is deterministic. ``stream_usage=False`` streams without
    usage, like a provider that omits it. ``calls`` counts provider calls actually made.
    """

    model_name: str = "gpt-4o-mini"
    provider: str = "openai"
    responses: list[str] = Field(default_factory=lambda: ["OK."])
    usage: UsageMetadata | None = None
    report_usage: bool = True
    stream_usage: bool = True
    temperature: float | None = 0.0
    max_tokens: int | None = None
    fail_with: str | None = None
    latency_s: float = 0.0
    """Simulated provider latency per call (the demo uses it so latency panels have data)."""
    _cycle: Iterator[str] = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: int = PrivateAttr(default=0)

    def model_post_init(self, context: Any) -> None:
        self._cycle = itertools.cycle(self.responses)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider=self.provider, ls_model_name=self.model_name, ls_model_type="chat")
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        return params

    def _next(self, messages: Sequence[BaseMessage]) -> tuple[str, UsageMetadata | None]:
        with self._lock:
            self._calls += 1
            text = next(self._cycle)
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        if not self.report_usage:
            return text, None
        if self.usage is not None:
            return text, self.usage
        inp, out = 10 * _words(messages) + 20, 3 * len(text.split()) + 5
        return text, UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text, usage = self._next(messages)
        message = AIMessage(content=text, usage_metadata=usage,
                            response_metadata={"model_name": self.model_name, "finish_reason": "stop"})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text, usage = self._next(messages)
        pieces = text.split(" ")
        for index, piece in enumerate(pieces):
            token = piece if index == 0 else " " + piece
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        last = AIMessageChunk(content="", response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
                              usage_metadata=usage if self.stream_usage else None)
        yield ChatGenerationChunk(message=last)


class StaticRetriever(BaseRetriever):
    """Returns the first ``k`` of a fixed list of documents."""

    documents: list[str] = Field(default_factory=lambda: ["VITAL keeps costs visible."])
    k: int = 3

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=text, metadata={"rank": i}) for i, text in enumerate(self.documents[: self.k])]
