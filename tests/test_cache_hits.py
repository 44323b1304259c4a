"""LangChain response-cache hits: cost 0, with what the call would have cost kept as saved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.testing.fakes import ScriptedChatModel


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


def test_sql_and_prometheus_agree_on_hits_and_savings(llm_cache: InMemoryCache, tmp_path: Path) -> None:
    """Over a miss and a hit, SQL rows and Prometheus counters give the same cost, savings and hit count."""
    registry = CollectorRegistry()
    sql = SQLSink(f"sqlite:///{tmp_path / 'c.db'}")
    handler = VitalCallbackHandler(Settings(), sinks=[sql, PrometheusSink(registry=registry)])
    model = ScriptedChatModel(model_name="gpt-4o-mini")
    for _ in range(2):
        model.invoke("same question", config={"callbacks": [handler], "metadata": {"tenant_id": "acme"}})
    handler.flush()
    with sql.engine.connect() as conn:
        cost, saved, hits = conn.execute(text(
            "SELECT sum(total_cost), sum(coalesce(saved_cost, 0)), sum(cache_hit) FROM llm_calls")).one()
    labels = {"provider": "openai", "model": "gpt-4o-mini", "tenant": "acme"}
    assert hits == 1
    assert registry.get_sample_value("vital_llm_cache_requests_total",
                                     {"model": "gpt-4o-mini", "result": "hit"}) == 1
    assert registry.get_sample_value("vital_llm_cache_requests_total",
                                     {"model": "gpt-4o-mini", "result": "miss"}) == 1
    assert registry.get_sample_value("vital_llm_cost_usd_total", labels) == pytest.approx(float(cost))
    saved_metric = registry.get_sample_value("vital_llm_cost_saved_usd_total", {"provider": "openai",
                                                                                "model": "gpt-4o-mini",
                                                                                "tenant": "acme"})
    assert saved_metric == pytest.approx(float(saved)) and float(saved) == pytest.approx(float(cost))
    handler.shutdown()
