"""The Grafana dashboards, as code: the single source of ``integrations/grafana/dashboards/*.json``.

Run ``python integrations/grafana/dashboards.py`` after editing; a test fails when the JSON files are
stale, and the end-to-end test evaluates every query below against a real Prometheus fed by the demo
workload, so a panel that would show nothing fails CI. Queries use the default ``vital_`` prefix.

Failure-rate queries add ``or 0 * rate(...)`` so that a graph with no errors shows 0, not "No data".
Token kinds are exclusive (``vital_llm_tokens_total{type, kind}``), so the token panels stack: the top
of the stack is every token, and a share is one kind over its ``type``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
T = 'tenant=~"$tenant"'


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]
    """(legend, PromQL) pairs, one per line on the panel."""
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    description: str = ""
    stacked: bool = False
    """Lines stack: only for series that are exclusive parts of one whole."""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("vital-callbacks",))


def p(title: str, *exprs: tuple[str, str], unit: str = "short", kind: str = "timeseries", width: int = 12,
      description: str = "", stacked: bool = False) -> Panel:
    return Panel(title, tuple(exprs), unit, kind, width, description, stacked)


def failure_rate(metric: str, by: str, selector: str = "") -> str:
    """Share of ``status="error"`` calls; 0 (not empty) when nothing failed."""
    sel = f"{{{selector}}}" if selector else ""
    err = f'{{status="error"{"," + selector if selector else ""}}}'
    return (f"sum by ({by}) (rate({metric}{err}[{RI}]) or 0 * rate({metric}{sel}[{RI}]))"
            f" / sum by ({by}) (rate({metric}{sel}[{RI}]))")


def quantile(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RI}])))"


COST = Dashboard("vital-llm-cost", "LLM Cost", (
    p("Burn rate (USD / hour)", ("USD/h", f"sum(rate(vital_llm_cost_usd_total{{{T}}}[{RI}])) * 3600"),
      unit="currencyUSD"),
    p("Projected spend today (USD, at the last hour's rate)",
      ("USD/day", f"sum(rate(vital_llm_cost_usd_total{{{T}}}[1h])) * 86400"), unit="currencyUSD", kind="stat",
      width=6),
    p("Cost per graph run (p95)", ("{{graph}}", quantile(0.95, "vital_graph_cost_usd", "graph")),
      unit="currencyUSD", width=6),
    p("Cost by model (USD / hour)", ("{{provider}} {{model}}",
      f"sum by (provider, model) (rate(vital_llm_cost_usd_total{{{T}}}[{RI}])) * 3600"), unit="currencyUSD"),
    p("Cost by tenant (USD / hour)", ("{{tenant}}",
      f"sum by (tenant) (rate(vital_llm_cost_usd_total{{{T}}}[{RI}])) * 3600"), unit="currencyUSD"),
    p("Tokens by kind (per second)", ("{{type}} {{kind}}",
      f"sum by (type, kind) (rate(vital_llm_tokens_total{{{T}}}[{RI}]))"), stacked=True,
      description="Input is uncached + cache_read + cache_write + audio, output is text + reasoning + audio; "
                  "the stack's top is all tokens."),
    p("Unpriced calls (no price known: cost is undercounted)", ("{{provider}} {{model}}",
      f"sum by (provider, model) (increase(vital_unpriced_calls_total{{{T}}}[{RI}]))")),
    p("Response-cache hit rate", ("hit rate",
      f'sum(rate(vital_llm_cache_requests_total{{result="hit"}}[{RI}]) or 0 * rate(vital_llm_cache_requests_total'
      f"[{RI}])) / sum(rate(vital_llm_cache_requests_total[{RI}]))"), unit="percentunit"),
    p("Saved by cache (USD / hour)", ("{{model}}",
      f"sum by (model) (rate(vital_llm_cost_saved_usd_total{{{T}}}[{RI}])) * 3600"), unit="currencyUSD"),
    p("Input read from the provider's prompt cache (share)", ("{{provider}} {{model}}",
      f'sum by (provider, model) (rate(vital_llm_tokens_total{{type="input",kind="cache_read",{T}}}[{RI}]))'
      f' / sum by (provider, model) (rate(vital_llm_tokens_total{{type="input",{T}}}[{RI}]))'), unit="percentunit",
      description="Prompt caching (billed at the cache-read rate), not LangChain's response cache."),
    p("Reasoning (share of output tokens)", ("{{provider}} {{model}}",
      f'sum by (provider, model) (rate(vital_llm_tokens_total{{type="output",kind="reasoning",{T}}}[{RI}]))'
      f' / sum by (provider, model) (rate(vital_llm_tokens_total{{type="output",{T}}}[{RI}]))'), unit="percentunit"),
))

PERFORMANCE = Dashboard("vital-performance", "Performance", (
    p("Request rate by model", ("{{model}} {{status}}",
      f"sum by (model, status) (rate(vital_llm_requests_total{{{T}}}[{RI}]))"), unit="reqps"),
    p("Error rate", ("{{provider}} {{model}}", failure_rate("vital_llm_requests_total", "provider, model", T)),
      unit="percentunit"),
    p("Latency (all models)",
      ("p50", quantile(0.5, "vital_llm_request_duration_seconds")),
      ("p95", quantile(0.95, "vital_llm_request_duration_seconds")),
      ("p99", quantile(0.99, "vital_llm_request_duration_seconds")), unit="s"),
    p("p95 latency by model", ("{{model}}", quantile(0.95, "vital_llm_request_duration_seconds", "model")),
      unit="s"),
    p("Time to first token",
      ("p50", quantile(0.5, "vital_llm_time_to_first_token_seconds")),
      ("p95", quantile(0.95, "vital_llm_time_to_first_token_seconds")), unit="s"),
    p("Output tokens per second", ("{{model}}",
      f'sum by (model) (rate(vital_llm_tokens_total{{type="output",{T}}}[{RI}]))')),
    p("Events dropped by sink and reason",
      ("{{sink}}: {{reason}}", f"sum by (sink, reason) (increase(vital_events_dropped_total[{RI}]))")),
    p("Sink queue depth", ("{{sink}}", "max by (sink) (vital_sink_queue_depth)")),
    p("Build", ("{{version}} (python {{python}})", "max by (version, python) (vital_build_info)"), kind="table",
      width=24),
))

NODE = "{{graph}}/{{subgraph}}/{{node}}"
"""A node's legend, named as the CLI's reports name it: its graph, the subgraph it is a node of (empty at
the graph's own level: ``graph//node``), its name."""
AGENTS = Dashboard("vital-agents", "Agents & Nodes", (
    p("Graph runs by status", ("{{graph}} {{status}}",
      f"sum by (graph, status) (rate(vital_graph_runs_total[{RI}]))"), unit="ops"),
    p("Graph run latency (p95)", ("{{graph}}", quantile(0.95, "vital_graph_duration_seconds", "graph")), unit="s"),
    p("Node executions", (NODE,
      f"sum by (graph, subgraph, node) (rate(vital_node_executions_total[{RI}]))"), unit="ops"),
    p("Node latency (p95)", (NODE, quantile(0.95, "vital_node_duration_seconds", "graph, subgraph, node")),
      unit="s"),
    p("Node cost (USD / hour)", (NODE,
      f"sum by (graph, subgraph, node) (rate(vital_node_cost_usd_total[{RI}])) * 3600"), unit="currencyUSD"),
    p("Node failure rate", (NODE, failure_rate("vital_node_executions_total", "graph, subgraph, node")),
      unit="percentunit"),
    p("Quality score (mean)", ("{{name}} {{graph}}",
      f"sum by (name, graph) (rate(vital_quality_score_sum[{RI}]))"
      f" / sum by (name, graph) (rate(vital_quality_score_count[{RI}]))"), unit="percentunit"),
    p("Quality score distribution", ("{{le}}", f"sum by (le) (rate(vital_quality_score_bucket[{RI}]))"),
      kind="heatmap"),
    p("Degraded responses (share of scored)", ("{{name}}",
      f"sum by (name) (rate(vital_degraded_responses_total[{RI}]))"
      f" / sum by (name) (rate(vital_quality_score_count[{RI}]))"), unit="percentunit"),
))

TOOLS = Dashboard("vital-tools-retrieval", "Tools & Retrieval", (
    p("Tool calls", ("{{tool}} {{status}}", f"sum by (tool, status) (rate(vital_tool_calls_total[{RI}]))"),
      unit="ops"),
    p("Tool failure rate", ("{{tool}}", failure_rate("vital_tool_calls_total", "tool")), unit="percentunit"),
    p("Tool latency (p95)", ("{{tool}}", quantile(0.95, "vital_tool_duration_seconds", "tool")), unit="s"),
    p("Retriever calls", ("{{retriever}} {{status}}",
      f"sum by (retriever, status) (rate(vital_retriever_calls_total[{RI}]))"), unit="ops"),
    p("Retriever failure rate", ("{{retriever}}", failure_rate("vital_retriever_calls_total", "retriever")),
      unit="percentunit"),
    p("Retriever latency (p95)", ("{{retriever}}",
      quantile(0.95, "vital_retriever_duration_seconds", "retriever")), unit="s"),
    p("Documents per retrieval (mean)", ("{{retriever}}",
      f"sum by (retriever) (rate(vital_retriever_documents_sum[{RI}]))"
      f" / sum by (retriever) (rate(vital_retriever_documents_count[{RI}]))")),
    p("Response-cache hit rate by model", ("{{model}}",
      f'sum by (model) (rate(vital_llm_cache_requests_total{{result="hit"}}[{RI}])'
      f" or 0 * rate(vital_llm_cache_requests_total[{RI}]))"
      f" / sum by (model) (rate(vital_llm_cache_requests_total[{RI}]))"), unit="percentunit"),
    p("Saved by cache (USD / hour)", ("saved",
      f"sum(rate(vital_llm_cost_saved_usd_total[{RI}])) * 3600"), unit="currencyUSD"),
))

DASHBOARDS = (COST, PERFORMANCE, AGENTS, TOOLS)


def _templating() -> dict[str, Any]:
    return {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
         "current": {}, "hide": 0},
        {"name": "tenant", "type": "query", "label": "Tenant", "datasource": DATASOURCE,
         "query": {"query": "label_values(vital_llm_requests_total, tenant)", "refId": "tenant"},
         "definition": "label_values(vital_llm_requests_total, tenant)", "refresh": 2, "includeAll": True,
         "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1},
    ]}


def _defaults(panel: Panel) -> dict[str, Any]:
    if not panel.stacked:
        return {"unit": panel.unit}
    return {"unit": panel.unit, "custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 40}}


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard (schema 39, Grafana 10/11)."""
    panels: list[dict[str, Any]] = []
    x = y = 0
    for index, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append({
            "id": index, "type": panel.kind, "title": panel.title, "description": panel.description,
            "datasource": DATASOURCE, "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8},
            "fieldConfig": {"defaults": _defaults(panel), "overrides": []}, "options": {},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                         "range": panel.kind != "table", "instant": panel.kind == "table"}
                        for i, (legend, expr) in enumerate(panel.exprs)],
        })
        x += panel.width
    return {"uid": dashboard.uid, "title": dashboard.title, "tags": list(dashboard.tags), "schemaVersion": 39,
            "version": 1, "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "timezone": "", "templating": _templating(), "annotations": {"list": []}, "panels": panels}


def files() -> dict[Path, str]:
    return {OUT / f"{d.uid}.json": json.dumps(render(d), indent=2) + "\n" for d in DASHBOARDS}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for path, text in files().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
