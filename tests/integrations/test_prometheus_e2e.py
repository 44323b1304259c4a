"""End to end: a real Prometheus scrapes the demo workload; every panel and alert query is evaluated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import require_service
from tests.integrations.promql import PrometheusServer, alert_rules, binary, panel_queries, readme_queries
from tests.integrations.workload import Account, LLMTally, Workload
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.prometheus.exposition import start_server
from vital_callbacks.sinks.prometheus.metrics import TOKEN_KINDS

SCRAPES_WITH_TRAFFIC = 8


class Traffic:
    """The workload recorded by a sink that a real Prometheus scrapes, with the account of its calls."""

    def __init__(self, workdir: Path) -> None:
        registry = CollectorRegistry()
        self.sink = PrometheusSink(registry=registry)
        self.tally = LLMTally()
        self.handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[self.tally, self.sink])
        self.server = PrometheusServer(workdir, f"127.0.0.1:{start_server(0, '127.0.0.1', registry)}")
        self._stop = threading.Event()
        self._round = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        workload = Workload()
        while not self._stop.is_set():
            with self._round:
                workload.round(self.handler)
                for score in (0.95, 0.7, 0.9):
                    self.sink.record_score("faithfulness", score, "research_agent")
                self.handler.flush()
            self._stop.wait(0.2)

    @contextmanager
    def paused(self) -> Iterator[Account]:
        """No traffic inside; yields the account of every call recorded, once Prometheus has scraped
        them all (a scrape that started after the last one was delivered)."""
        with self._round:
            assert self.handler.flush()
            # Prometheus may move a scrape's timestamp by up to 2 ms to align it: a margin past that.
            delivered = time.time() + 0.01
            for _ in range(600):
                result = self.server.query("max(timestamp(vital_llm_requests_total))")["data"]["result"]
                if result and float(result[0]["value"][1]) > delivered:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("prometheus did not scrape after the traffic paused")
            yield self.tally.total()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.handler.shutdown()
        self.server.stop()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """Prometheus scraping /metrics while the workload runs, until it holds several scrapes of traffic."""
    require_service(binary("prometheus") is not None, "prometheus is not installed (apt-get install prometheus)")
    live = Traffic(Path(tmp_path_factory.mktemp("prometheus")))
    try:
        live.server.wait_ready()
        # Wait on Prometheus's own view (not a clock): enough scrapes that saw the counters grow.
        for _ in range(600):
            result = live.server.query("changes(vital_graph_runs_total[1m])")["data"]["result"]
            if result and max(float(r["value"][1]) for r in result) >= SCRAPES_WITH_TRAFFIC:
                break
            time.sleep(0.1)
        else:
            pytest.fail("prometheus never scraped the workload")
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def prometheus(traffic: Traffic) -> PrometheusServer:
    return traffic.server


@pytest.mark.parametrize(("panel", "expr"), panel_queries(), ids=[name for name, _ in panel_queries()])
def test_every_dashboard_panel_returns_data(prometheus: PrometheusServer, panel: str, expr: str) -> None:
    """The panel's PromQL parses in a real Prometheus and returns a finite value for the workload."""
    answer = prometheus.query(expr)
    assert answer["status"] == "success", (panel, answer)
    values = [sample["value"][1] for sample in answer["data"]["result"]]
    assert any(v not in ("NaN", "+Inf", "-Inf") for v in values), f"{panel} shows no data: {expr} -> {values}"


@pytest.mark.parametrize("expr", readme_queries())
def test_every_readme_example_returns_data(prometheus: PrometheusServer, expr: str) -> None:
    """The README's PromQL examples parse in a real Prometheus and return a finite value for the workload."""
    answer = prometheus.query(expr)
    assert answer["status"] == "success", (expr, answer)
    values = [sample["value"][1] for sample in answer["data"]["result"]]
    assert any(v not in ("NaN", "+Inf", "-Inf") for v in values), f"no data: {expr} -> {values}"


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


def by(server: PrometheusServer, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    """An instant query's result keyed by the values of ``labels``."""
    answer = server.query(expr)
    assert answer["status"] == "success", (expr, answer)
    return {tuple(r["metric"].get(name, "") for name in labels): float(r["value"][1])
            for r in answer["data"]["result"]}


def test_sums_over_the_scraped_metrics_equal_the_recorded_calls(traffic: Traffic) -> None:
    """Evaluated by Prometheus on what it scraped: every token summed is the calls' input + output (= their
    reported total), by type their input and output, by kind their cache, audio and reasoning details, per
    provider/model/tenant each group's tokens; calls, priced cost (per model and per node) and
    unpriced calls add up to the same account."""
    server = traffic.server
    with traffic.paused() as account:
        tokens = by(server, "sum(vital_llm_tokens_total)")
        by_type = by(server, "sum by (type) (vital_llm_tokens_total)", "type")
        by_kind = by(server, "sum by (type, kind) (vital_llm_tokens_total)", "type", "kind")
        by_group = by(server, "sum by (provider, model, tenant) (vital_llm_tokens_total)",
                      "provider", "model", "tenant")
        calls = by(server, "sum(vital_llm_requests_total)")
        cost = by(server, "sum(vital_llm_cost_usd_total)")
        node_cost = by(server, "sum(vital_node_cost_usd_total)")
        unpriced = by(server, "sum(vital_unpriced_calls_total)")
        groups = traffic.tally.groups()
    usage = account.usage
    assert all((usage.cache_read, usage.cache_write, usage.reasoning, usage.input_audio, usage.output_audio))
    assert account.unpriced > 0
    assert usage.input + usage.output == usage.total
    assert tokens == {(): usage.total}
    assert by_type == {("input",): usage.input, ("output",): usage.output}
    assert set(by_kind) == set(TOKEN_KINDS)
    assert (by_kind["input", "cache_read"], by_kind["input", "cache_write"], by_kind["input", "audio"]) == (
        usage.cache_read, usage.cache_write, usage.input_audio - usage.cache_audio_read)
    assert (by_kind["output", "reasoning"], by_kind["output", "audio"]) == (usage.reasoning, usage.output_audio)
    assert by_group == {group: group_account.tokens for group, group_account in groups.items()}
    assert calls == {(): account.calls}
    assert cost[()] == pytest.approx(float(account.cost), rel=1e-9)
    assert node_cost[()] == pytest.approx(float(account.cost), rel=1e-9)
    assert unpriced == {(): account.unpriced}
