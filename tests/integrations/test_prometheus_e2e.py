"""End to end: a real Prometheus scrapes the demo workload; every panel and alert query is evaluated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import require_service
from tests.integrations.promql import PrometheusServer, alert_rules, binary, panel_queries
from tests.integrations.workload import Workload
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.prometheus.exposition import start_server

SCRAPES_WITH_TRAFFIC = 8


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping /metrics while the workload runs, until it holds several scrapes of traffic."""
    require_service(binary("prometheus") is not None, "prometheus is not installed (apt-get install prometheus)")
    registry = CollectorRegistry()
    sink = PrometheusSink(registry=registry)
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink])
    port = start_server(0, "127.0.0.1", registry)
    server = PrometheusServer(Path(tmp_path_factory.mktemp("prometheus")), f"127.0.0.1:{port}")
    stop = threading.Event()

    def traffic() -> None:
        workload = Workload()
        while not stop.is_set():
            workload.round(handler)
            for score in (0.95, 0.7, 0.9):
                sink.record_score("faithfulness", score, "research_agent")
            handler.flush()
            stop.wait(0.2)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        server.wait_ready()
        # Wait on Prometheus's own view (not a clock): enough scrapes that saw the counters grow.
        for _ in range(600):
            result = server.query("changes(vital_graph_runs_total[1m])")["data"]["result"]
            if result and max(float(r["value"][1]) for r in result) >= SCRAPES_WITH_TRAFFIC:
                break
            time.sleep(0.1)
        else:
            pytest.fail("prometheus never scraped the workload")
        yield server
    finally:
        stop.set()
        thread.join(60)
        handler.shutdown()
        server.stop()


@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=[name for name, _ in panel_queries()])
def test_every_dashboard_panel_returns_data(prometheus: PrometheusServer, panel: str, expr: str) -> None:
    """The panel's PromQL parses in a real Prometheus and returns a finite value for the workload."""
    answer = prometheus.query(expr)
    assert answer["status"] == "success", (panel, answer)
    values = [sample["value"][1] for sample in answer["data"]["result"]]
    assert any(v not in ("NaN", "+Inf", "-Inf") for v in values), f"{panel} shows no data: {expr} -> {values}"


@pytest.mark.parametrize("rule", alert_rules(), ids=[rule["alert"] for rule in alert_rules()])
def test_every_alert_expression_parses_and_evaluates(prometheus: PrometheusServer, rule: dict[str, str]) -> None:
    """The alert's PromQL is accepted by the HTTP query API."""
    answer = prometheus.query(rule["expr"])
    assert answer["status"] == "success", (rule["alert"], answer)


def test_prometheus_loaded_and_evaluated_every_rule(prometheus: PrometheusServer) -> None:
    """Prometheus loaded alerts.yml and evaluates every rule without error (health ok)."""
    names = {rule["alert"] for rule in alert_rules()}
    for _ in range(100):
        groups = prometheus.api("rules")["data"]["groups"]
        loaded = {r["name"]: r.get("health") for g in groups for r in g["rules"]}
        if set(loaded) == names and all(h == "ok" for h in loaded.values()):
            break
        time.sleep(0.1)
    assert set(loaded) == names
    assert all(h == "ok" for h in loaded.values()), loaded


def test_scraped_values_match_the_sink(prometheus: PrometheusServer) -> None:
    """What Prometheus stored includes every tenant and the error and cache-hit series of the workload."""
    tenants = prometheus.query("sum by (tenant) (vital_llm_requests_total)")["data"]["result"]
    assert {r["metric"]["tenant"] for r in tenants} == {"acme", "globex", "initech"}
    errors = prometheus.query('sum(vital_llm_requests_total{status="error"})')["data"]["result"]
    assert float(errors[0]["value"][1]) > 0
    hits = prometheus.query('sum(vital_llm_cache_requests_total{result="hit"})')["data"]["result"]
    assert float(hits[0]["value"][1]) > 0
