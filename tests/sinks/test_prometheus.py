"""The Prometheus sink: values equal the SQL rows, labels stay bounded, exposition and push work."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from tests.conftest import require_service
from tests.graphs import INPUT, METADATA, build_graph
from tests.integrations.workload import UNPRICED_MODEL, LLMTally, Workload
from vital_callbacks import Event, ExportResult, LLMCall, Settings, Sink, TokenUsage, VitalCallbackHandler
from vital_callbacks.runtime.registry import sink_class
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.prometheus.exposition import make_asgi_app, make_wsgi_app, start_server
from vital_callbacks.sinks.prometheus.metrics import TOKEN_KINDS, split_tokens
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.store.schema import graph_runs, llm_calls, node_runs, retriever_calls, tool_calls

FAST = Settings(flush_interval_s=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def recorded(tmp_path: Path, registry: CollectorRegistry) -> Iterator[tuple[SQLSink, CollectorRegistry]]:
    """Two rounds of the demo workload, recorded by the SQL sink and our sink in one pipeline."""
    sql = SQLSink(f"sqlite:///{tmp_path / 'vital.db'}")
    handler = VitalCallbackHandler(FAST, sinks=[sql, PrometheusSink(registry=registry)])
    workload = Workload()
    for _ in range(2):
        workload.round(handler)
    assert handler.flush()
    yield sql, registry
    handler.shutdown()


def value(registry: CollectorRegistry, sample: str, /, **labels: str) -> float:
    return registry.get_sample_value(sample, labels) or 0.0


def family_sum(registry: CollectorRegistry, sample_name: str, **match: str) -> float:
    """Sum of every sample of ``sample_name`` whose labels include ``match``."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
    return total


def scalar(engine: Engine, statement: Any) -> Any:
    with engine.connect() as conn:
        return conn.scalar(statement)


def test_tokens_and_cost_equal_the_sql_rows(recorded: tuple[SQLSink, CollectorRegistry]) -> None:
    """Per model and tenant, token counters and USD cost equal the sums over the SQL llm_calls rows: the
    breakdown kinds are the detail columns, the plain kinds what is left of input and output."""
    sql, registry = recorded
    t = llm_calls.c
    audio_in = t.input_audio_tokens - t.cache_audio_read_tokens  # cached audio counts as a cache read
    columns = {
        ("input", "uncached"): t.input_tokens - t.cache_read_tokens - t.cache_write_tokens - audio_in,
        ("input", "cache_read"): t.cache_read_tokens, ("input", "cache_write"): t.cache_write_tokens,
        ("input", "audio"): audio_in,
        ("output", "text"): t.output_tokens - t.reasoning_tokens - t.output_audio_tokens,
        ("output", "reasoning"): t.reasoning_tokens, ("output", "audio"): t.output_audio_tokens,
    }
    assert set(columns) == set(TOKEN_KINDS)
    with sql.engine.connect() as conn:
        groups = conn.execute(select(t.provider, t.model, t.tenant_id).distinct()).all()
    assert len(groups) >= 9
    for provider, model, tenant in groups:
        where = (t.provider == provider, t.model == model, t.tenant_id == tenant)
        for (type_, kind), column in columns.items():
            rows = scalar(sql.engine, select(func.coalesce(func.sum(column), 0)).where(*where))
            assert value(registry, "vital_llm_tokens_total", provider=provider, model=model, tenant=tenant,
                         type=type_, kind=kind) == rows, (provider, model, tenant, type_, kind)
        for type_, column in (("input", t.input_tokens), ("output", t.output_tokens)):
            rows = scalar(sql.engine, select(func.coalesce(func.sum(column), 0)).where(*where))
            assert family_sum(registry, "vital_llm_tokens_total", provider=provider, model=model, tenant=tenant,
                              type=type_) == rows, (provider, model, tenant, type_)
        expected = scalar(sql.engine, select(func.sum(t.total_cost)).where(*where)) or Decimal(0)
        got = value(registry, "vital_llm_cost_usd_total", provider=provider, model=model, tenant=tenant)
        assert got == pytest.approx(float(expected), rel=1e-12, abs=1e-15)
        for status in ("success", "error"):
            n = scalar(sql.engine, select(func.count()).where(*where, t.status == status))
            assert value(registry, "vital_llm_requests_total", provider=provider, model=model, status=status,
                         tenant=tenant) == n


def test_counts_of_every_kind_equal_the_sql_rows(recorded: tuple[SQLSink, CollectorRegistry]) -> None:
    """Node, tool, retriever and graph-run counters, and the graph cost histogram, equal the SQL rows."""
    sql, registry = recorded
    nodes, tools, retrievers, graphs, calls = (table.c for table in
                                               (node_runs, tool_calls, retriever_calls, graph_runs, llm_calls))

    def count(columns: Any, *where: Any) -> int:
        return int(scalar(sql.engine, select(func.count(columns.run_id)).where(*where)))

    assert family_sum(registry, "vital_node_executions_total") == count(nodes)
    assert family_sum(registry, "vital_node_executions_total", status="error") == count(
        nodes, nodes.status == "error") > 0
    assert family_sum(registry, "vital_tool_calls_total") == count(tools)
    assert family_sum(registry, "vital_retriever_calls_total") == count(retrievers)
    docs = scalar(sql.engine, select(func.sum(retrievers.documents)))
    assert family_sum(registry, "vital_retriever_documents_sum") == docs
    assert family_sum(registry, "vital_graph_runs_total") == count(graphs)
    assert family_sum(registry, "vital_graph_runs_total", status="error") == count(
        graphs, graphs.status == "error") > 0
    assert family_sum(registry, "vital_graph_cost_usd_count") == count(graphs, graphs.cost_usd.is_not(None))
    graph_cost = scalar(sql.engine, select(func.sum(graphs.cost_usd)))
    assert family_sum(registry, "vital_graph_cost_usd_sum") == pytest.approx(float(graph_cost))
    total_cost = scalar(sql.engine, select(func.sum(calls.total_cost)))
    assert family_sum(registry, "vital_node_cost_usd_total") == pytest.approx(float(total_cost))


def test_unpriced_and_cached_calls(recorded: tuple[SQLSink, CollectorRegistry]) -> None:
    """Calls without a price count as unpriced; cache hits count as hits and add their list price as saved."""
    sql, registry = recorded
    t = llm_calls.c
    unpriced = scalar(sql.engine, select(func.count()).where(t.model == UNPRICED_MODEL, t.total_cost.is_(None)))
    hits = scalar(sql.engine, select(func.count()).where(t.cache_hit.is_(True)))
    saved = scalar(sql.engine, select(func.sum(t.saved_cost)))
    calls = scalar(sql.engine, select(func.count(t.run_id)))
    assert unpriced > 0 and hits > 0
    assert family_sum(registry, "vital_unpriced_calls_total") == unpriced
    assert family_sum(registry, "vital_unpriced_calls_total", provider="selfhosted", model=UNPRICED_MODEL) == unpriced
    per_tenant = select(t.tenant_id, func.count()).where(t.model == UNPRICED_MODEL).group_by(t.tenant_id)
    with sql.engine.connect() as conn:
        for tenant, n in conn.execute(per_tenant).all():
            assert value(registry, "vital_unpriced_calls_total", provider="selfhosted", model=UNPRICED_MODEL,
                         tenant=tenant) == n
    assert family_sum(registry, "vital_llm_cache_requests_total", result="hit") == hits
    assert family_sum(registry, "vital_llm_cache_requests_total") == calls
    assert family_sum(registry, "vital_llm_cost_saved_usd_total") == pytest.approx(float(saved))


def exposed_tokens(registry: CollectorRegistry) -> list[tuple[dict[str, str], float]]:
    """The ``vital_llm_tokens_total`` samples of the text exposition a scrape would read."""
    text = generate_latest(registry).decode()
    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "vital_llm_tokens_total"]


def summed(samples: list[tuple[dict[str, str], float]], *by: str) -> dict[tuple[str, ...], float]:
    """``sum by (*by)`` over exposition samples."""
    out: dict[tuple[str, ...], float] = {}
    for labels, amount in samples:
        key = tuple(labels[name] for name in by)
        out[key] = out.get(key, 0.0) + amount
    return out


def test_token_kinds_add_up_to_the_recorded_calls(registry: CollectorRegistry) -> None:
    """On the exposition: the sum over every label is the calls' input + output (= their reported total),
    by type it is input and output, by kind the details, and per provider/model/tenant too; each detail
    kind is exercised, so a double count of any of them shows."""
    tally = LLMTally()
    handler = VitalCallbackHandler(FAST, sinks=[tally, PrometheusSink(registry=registry)])
    workload = Workload()
    for _ in range(2):
        workload.round(handler)
    assert handler.flush()
    handler.shutdown()
    usage = tally.total().usage
    assert all((usage.cache_read, usage.cache_write, usage.reasoning, usage.input_audio, usage.output_audio))
    samples = exposed_tokens(registry)
    assert summed(samples) == {(): usage.input + usage.output}
    assert usage.input + usage.output == usage.total
    assert summed(samples, "type") == {("input",): usage.input, ("output",): usage.output}
    kinds = summed(samples, "type", "kind")
    assert (kinds["input", "cache_read"], kinds["input", "cache_write"], kinds["input", "audio"]) == (
        usage.cache_read, usage.cache_write, usage.input_audio - usage.cache_audio_read)
    assert (kinds["output", "reasoning"], kinds["output", "audio"]) == (usage.reasoning, usage.output_audio)
    assert summed(samples, "provider", "model", "tenant") == {
        group: account.tokens for group, account in tally.groups().items()}
    assert {(labels["type"], labels["kind"]) for labels, _ in samples} == set(TOKEN_KINDS)


@pytest.mark.parametrize(("usage", "kinds"), [
    (TokenUsage(input=1200, output=350, total=1550, cache_read=1024, reasoning=256), (176, 1024, 0, 0, 94, 256, 0)),
    (TokenUsage(input=1500, output=200, total=1700, cache_read=600, cache_write=400), (500, 600, 400, 0, 200, 0, 0)),
    (TokenUsage(input=40, output=7, total=47), (40, 0, 0, 0, 7, 0, 0)),
    # Cached audio is part of both cache_read and input_audio: counted once, as a cache read.
    (TokenUsage(input=900, output=300, total=1200, cache_read=300, input_audio=500, cache_audio_read=100,
                output_audio=250, reasoning=20), (200, 300, 0, 400, 30, 20, 250)),
    # More detail than the total it is part of (a provider's bug): details are capped, totals stay exact.
    (TokenUsage(input=100, output=10, total=110, cache_read=150, cache_write=20, reasoning=30),
     (0, 100, 0, 0, 0, 10, 0)),
    (TokenUsage(input=100, output=10, total=110, cache_read=70, cache_write=50, input_audio=40),
     (0, 70, 30, 0, 10, 0, 0)),
    (TokenUsage(input=100, output=10, total=110, input_audio=20, cache_audio_read=30, output_audio=15,
                reasoning=4), (100, 0, 0, 0, 0, 4, 6)),
    (TokenUsage(), (0, 0, 0, 0, 0, 0, 0)),
])
def test_token_kinds_are_exclusive(usage: TokenUsage, kinds: tuple[int, ...]) -> None:
    """Kinds never overlap and never go negative, and they add up to input and output exactly."""
    assert split_tokens(usage) == kinds
    types = [type_ for type_, _ in TOKEN_KINDS]
    assert sum(n for n, t in zip(kinds, types, strict=True) if t == "input") == usage.input
    assert sum(n for n, t in zip(kinds, types, strict=True) if t == "output") == usage.output


def test_a_model_without_a_price_has_no_cost_series(registry: CollectorRegistry) -> None:
    """Not a series saying $0: an unpriced model exports an unpriced count and no cost at all; a priced
    model's cost series appears with its first priced call."""
    from vital_callbacks.core.events import Cost

    sink = PrometheusSink(registry=registry)
    usage = TokenUsage(input=100, output=10, total=110)
    sink.record(LLMCall(run_id="u", parent_run_id=None, trace_id="u", provider="p", model="mystery", usage=usage))
    sink.record(LLMCall(run_id="c", parent_run_id=None, trace_id="c", provider="p", model="mystery", usage=usage,
                        cache_hit=True))
    exposed = generate_latest(registry).decode()
    assert 'model="mystery"' in exposed
    assert not [line for line in exposed.splitlines()
                if 'model="mystery"' in line and line.startswith(("vital_llm_cost_usd", "vital_llm_cost_saved"))]
    assert family_sum(registry, "vital_unpriced_calls_total", model="mystery") == 2
    sink.record(LLMCall(run_id="k", parent_run_id=None, trace_id="k", provider="p", model="known", usage=usage,
                        cost=Cost(Decimal("0.001"), Decimal("0.002"), Decimal("0.003"))))
    assert family_sum(registry, "vital_llm_cost_usd_total", model="known") == pytest.approx(0.003)


def test_a_batch_counts_what_its_events_count_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    """Counters are added once per batch: the totals are those of recording each event alone, and an
    event with a negative cost fails alone (logged), not by lowering its batch's total."""
    from vital_callbacks.core.events import Cost

    def call(run_id: str, total: str, output: int = 10) -> LLMCall:
        amount = Decimal(total)
        return LLMCall(run_id=run_id, parent_run_id=None, trace_id=run_id, provider="p", model="m",
                       usage=TokenUsage(input=100, output=output, total=100 + output),
                       cost=Cost(amount / 2, amount / 2, amount), cache_hit=run_id == "hit", saved_cost=amount)

    calls = [call("a", "0.25"), call("hit", "0.5", 0), call("b", "0.125", 7)]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    single = PrometheusSink(registry=one_by_one)
    for event in calls:
        single.record(event)
    with pytest.raises(ValueError):  # what it counted before its cost stays counted, as in a batch
        single.record(call("bad", "-1"))
    assert PrometheusSink(registry=batched).export([calls[0], call("bad", "-1"), *calls[1:]]) is ExportResult.SUCCESS
    assert "prometheus sink skipped llm_call bad" in caplog.text
    for name in ("vital_llm_requests_total", "vital_llm_tokens_total", "vital_llm_cost_usd_total",
                 "vital_node_cost_usd_total", "vital_llm_cache_requests_total", "vital_llm_cost_saved_usd_total"):
        assert family_sum(batched, name) == family_sum(one_by_one, name), name
    assert family_sum(batched, "vital_llm_cost_usd_total") == 0.875
    assert family_sum(batched, "vital_llm_requests_total") == 4


def test_a_node_is_its_graph_subgraph_and_name(registry: CollectorRegistry) -> None:
    """Two nodes named alike, one in the graph and one in a subgraph of it, are two series for
    executions, latency and cost (as they are two in the SQL store): the subgraph's is not hidden."""
    from vital_callbacks import NodeRun
    from vital_callbacks.core.events import Cost, Status

    sink = PrometheusSink(registry=registry)
    cost = Cost(Decimal("0.001"), Decimal("0.002"), Decimal("0.003"))
    nodes: tuple[tuple[str | None, Status], ...] = ((None, "success"), ("research", "error"))
    for subgraph, status in nodes:
        sink.record(NodeRun(run_id=f"n-{subgraph}", parent_run_id=None, trace_id="t", graph="agent", node="plan",
                            subgraph=subgraph, status=status, duration_s=0.5))
        sink.record(LLMCall(run_id=f"c-{subgraph}", parent_run_id=None, trace_id="t", graph="agent", node="plan",
                            subgraph=subgraph, provider="p", model="m", cost=cost))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"graph": "agent", "node": "plan", **labels})

    assert value("vital_node_executions_total", subgraph="", status="success") == 1
    assert value("vital_node_executions_total", subgraph="research", status="error") == 1
    assert value("vital_node_executions_total", subgraph="", status="error") is None
    assert value("vital_node_duration_seconds_count", subgraph="research") == 1
    assert value("vital_node_cost_usd_total", subgraph="") == pytest.approx(0.003)
    assert value("vital_node_cost_usd_total", subgraph="research") == pytest.approx(0.003)


def test_inconsistent_usage_still_adds_up_in_the_sink(registry: CollectorRegistry) -> None:
    """A call reporting more cache reads than input tokens is recorded without a negative increment,
    and its series still sum to its input and output."""
    sink = PrometheusSink(registry=registry)
    sink.record(LLMCall(run_id="r", parent_run_id=None, trace_id="r", provider="p", model="m",
                        usage=TokenUsage(input=100, output=10, total=110, cache_read=150, reasoning=30)))
    samples = exposed_tokens(registry)
    assert summed(samples, "type") == {("input",): 100, ("output",): 10}
    assert all(amount >= 0 for _, amount in samples)


def run_tenants(registry: CollectorRegistry, tenants: Sequence[str], **sink_args: Any) -> None:
    handler = VitalCallbackHandler(FAST, sinks=[PrometheusSink(registry=registry, **sink_args)])
    graph = build_graph()
    for tenant in tenants:
        graph.invoke(INPUT, config={"callbacks": [handler], "metadata": {**METADATA, "tenant_id": tenant}})
    handler.shutdown()


def test_tenants_past_the_limit_become_other(registry: CollectorRegistry) -> None:
    """With max_tenants=2, the third distinct tenant is recorded under tenant="other"."""
    run_tenants(registry, ["a", "b", "c", "a"], max_tenants=2)
    requests = "vital_llm_requests_total"
    common = {"provider": "openai", "model": "o3-mini", "status": "success"}
    assert value(registry, requests, **common, tenant="a") == 2
    assert value(registry, requests, **common, tenant="b") == 1
    assert value(registry, requests, **common, tenant="other") == 1
    assert registry.get_sample_value(requests, {**common, "tenant": "c"}) is None


def test_user_label_only_when_enabled(registry: CollectorRegistry) -> None:
    """user_id is not a label by default; with user_label=True it is, and it is bounded too."""
    run_tenants(registry, ["a"])
    labels = {s.labels.get("user") for f in registry.collect() for s in f.samples}
    assert labels == {None}
    other = CollectorRegistry()
    run_tenants(other, ["a"], user_label=True)
    assert value(other, "vital_llm_cost_usd_total", provider="openai", model="o3-mini", tenant="a",
                 user="u1") > 0


def test_prefix_and_build_info(registry: CollectorRegistry) -> None:
    """The prefix applies to every family, and build_info carries the package version."""
    run_tenants(registry, ["a"], prefix="myapp_")
    names = {s.name for f in registry.collect() for s in f.samples}
    assert names and all(n.startswith("myapp_") for n in names)
    (info,) = [s for f in registry.collect() for s in f.samples if s.name == "myapp_build_info"]
    assert info.value == 1 and info.labels["version"]


def test_sinks_on_one_registry_share_families(registry: CollectorRegistry) -> None:
    """Two sinks on the same registry do not collide and add up into the same series."""
    run_tenants(registry, ["a"])
    run_tenants(registry, ["a"])
    assert value(registry, "vital_graph_runs_total", graph="research_agent", status="success") == 2


class _Failing(Sink):
    name = "broken"

    def export(self, batch: Sequence[Event]) -> ExportResult:
        return ExportResult.FAILURE


def test_dropped_events_and_queue_depth_come_from_the_pipeline(registry: CollectorRegistry) -> None:
    """events_dropped_total shows what another sink in the same pipeline lost, read at scrape time."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, max_retries=0),
                                   sinks=[_Failing(), PrometheusSink(registry=registry)])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    handler.flush()
    lost = handler.stats()["dropped"]["broken"]
    assert lost > 0
    assert family_sum(registry, "vital_events_dropped_total", sink="broken") == lost
    assert value(registry, "vital_events_dropped_total", sink="broken",
                 reason="export failed after retries") == lost  # the reason, as stats() gives it
    assert handler.stats()["dropped_reasons"]["broken"] == {"export failed after retries": lost}
    # Every known reason of every sink is there from the start, at 0 (increase() sees a first drop).
    assert registry.get_sample_value("vital_events_dropped_total", {"sink": "prometheus", "reason": "queue full"}) == 0
    assert registry.get_sample_value("vital_sink_queue_depth", {"sink": "prometheus"}) == 0
    handler.shutdown()


def test_quality_scores_and_degraded_responses(registry: CollectorRegistry) -> None:
    """Scores fill vital_quality_score{name,graph}; those under the threshold count as degraded."""
    sink = PrometheusSink(registry=registry)
    for score in (0.95, 0.5, 0.85):
        sink.record_score("faithfulness", score, "research_agent")
    labels = {"name": "faithfulness", "graph": "research_agent"}
    assert value(registry, "vital_quality_score_count", **labels) == 3
    assert value(registry, "vital_quality_score_sum", **labels) == pytest.approx(2.3)
    assert value(registry, "vital_degraded_responses_total", **labels) == 1


def test_entry_point_loads() -> None:
    """The `prometheus` entry point resolves to this sink."""
    assert sink_class("prometheus") is PrometheusSink


def test_settings_port_starts_one_exposition_server() -> None:
    """prometheus_port starts a server on the default registry, once per process, serving /metrics."""
    port = free_port()
    settings = Settings(sinks=["prometheus"], prometheus_port=port, prometheus_addr="127.0.0.1",
                        flush_interval_s=0.05)
    handler = VitalCallbackHandler(settings)
    other = VitalCallbackHandler(settings, tenant_id="t2")  # a second pipeline: no second server
    build_graph().invoke(INPUT, config={"callbacks": [handler, other], "metadata": METADATA})
    handler.flush()
    other.flush()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'vital_llm_requests_total{model="o3-mini",provider="openai",status="success",tenant="acme"}' in body
    handler.shutdown()
    other.shutdown()


def test_wsgi_and_asgi_apps_serve_the_registry(registry: CollectorRegistry) -> None:
    """The WSGI and ASGI apps answer with the exposition of the given registry."""
    run_tenants(registry, ["a"])
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    wsgi_body = b"".join(make_wsgi_app(registry)(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"] and b"vital_graph_runs_total" in wsgi_body

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    asyncio.run(make_asgi_app(registry)(scope, receive, send))
    assert sent[0]["status"] == 200
    assert b"vital_graph_runs_total" in b"".join(m.get("body", b"") for m in sent)


def test_start_server_on_port_zero_returns_the_bound_port(registry: CollectorRegistry) -> None:
    """start_server(0) binds a free port and reports it."""
    run_tenants(registry, ["a"])
    port = start_server(0, "127.0.0.1", registry)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"vital_graph_runs_total" in body


def test_pushes_to_a_real_pushgateway_at_flush(tmp_path: Path, registry: CollectorRegistry) -> None:
    """With pushgateway_url set, a flush pushes the metrics to a real Pushgateway."""
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    require_service(binary is not None, "prometheus-pushgateway is not installed")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        run_tenants(registry, ["a"], pushgateway_url=url, push_job="batch")
        body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'vital_graph_runs_total{graph="research_agent",instance=' in body
        assert 'job="batch"' in body
    finally:
        proc.terminate()
        proc.wait(10)
