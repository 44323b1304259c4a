"""LangChain response-cache hits: cost 0, with what the call would have cost kept as saved."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache

from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.fakes import ScriptedChatModel


@pytest.fixture
def llm_cache() -> Iterator[InMemoryCache]:
    cache = InMemoryCache()
    set_llm_cache(cache)
    yield cache
    set_llm_cache(None)


def test_second_identical_call_is_a_hit(llm_cache: InMemoryCache, memory_sink: InMemorySink) -> None:
    """The replayed call costs 0 and saves exactly what the first call cost; the provider is called once."""
    handler = VitalCallbackHandler(Settings(), sinks=[memory_sink])
    model = ScriptedChatModel(model_name="gpt-4o-mini")
    model.invoke("same question", config={"callbacks": [handler]})
    model.invoke("same question", config={"callbacks": [handler]})
    handler.flush()
    first, second = sorted(memory_sink.of(LLMCall), key=lambda c: c.start_time)
    assert model.calls == 1
    assert not first.cache_hit and first.cost is not None and first.cost.total > 0
    assert second.cache_hit and second.cost is not None and second.cost.total == 0
    assert second.saved_cost == first.cost.total
    assert second.usage == first.usage
    handler.shutdown()
