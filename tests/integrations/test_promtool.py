"""The shipped Prometheus, Alertmanager and Grafana files are valid and consistent with the sink."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import require_service
from tests.integrations.promql import (
    ALERTS,
    INTEGRATIONS,
    alert_rules,
    binary,
    dashboards_module,
    metric_names,
    panel_queries,
    readme_queries,
    run,
)
from vital_callbacks.budgets.metrics import BudgetMetrics
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.prometheus.metrics import TOKEN_KINDS

ALERTMANAGER = INTEGRATIONS / "alertmanager" / "alertmanager.yml"


def require(name: str) -> None:
    require_service(binary(name) is not None, f"{name} is not installed (apt-get install prometheus)")


def test_promtool_check_config() -> None:
    """`promtool check config` accepts prometheus.yml together with its rule file."""
    require("promtool")
    result = run("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    require("promtool")
    result = run("promtool", "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_cover_every_alert_firing_and_not() -> None:
    """`promtool test rules` passes, and its tests expect every alert both to fire and to stay quiet."""
    require("promtool")
    tests = yaml.safe_load((ALERTS.parent / "alerts_test.yml").read_text())["tests"]
    cases = [case for group in tests for case in group["alert_rule_test"]]
    names = {rule["alert"] for rule in alert_rules()}
    assert {c["alertname"] for c in cases if c.get("exp_alerts")} == names
    assert {c["alertname"] for c in cases if not c.get("exp_alerts")} == names
    result = run("promtool", "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_check_config() -> None:
    """`amtool check-config` accepts the Alertmanager configuration."""
    require("amtool")
    result = run("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("labels", "receivers"), [
    ({"severity": "critical", "category": "llm"}, "pagerduty"),
    ({"severity": "warning", "category": "llm"}, "slack-warnings"),
    ({"severity": "warning", "category": "cost"}, "finance"),
    ({"severity": "critical", "category": "cost"}, "finance,pagerduty"),
])
def test_alertmanager_routes_by_severity_and_category(labels: dict[str, str], receivers: str) -> None:
    """Critical alerts page, warnings go to Slack, cost alerts reach finance (and page when critical)."""
    require("amtool")
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.stdout.strip() == receivers, result.stdout + result.stderr


def test_every_alert_has_a_routed_severity() -> None:
    """Every alert carries severity critical or warning and a category, which the routes need."""
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["labels"]["category"], rule["alert"]


def test_dashboard_json_is_generated_from_the_python_source() -> None:
    """The committed dashboard JSON files are exactly what integrations/grafana/dashboards.py writes."""
    module = dashboards_module()
    expected = module.files()
    actual = {p: p.read_text() for p in (INTEGRATIONS / "grafana" / "dashboards").glob("*.json")}
    assert actual == expected, "run: python integrations/grafana/dashboards.py"
    titles = {json.loads(text)["title"] for text in expected.values()}
    assert titles == {"LLM Cost", "Performance", "Agents & Nodes", "Tools & Retrieval"}


def test_queries_only_name_metrics_the_sink_defines() -> None:
    """Every metric a dashboard, alert or README example reads is one the sink exposes (a typo would show
    nothing)."""
    registry = CollectorRegistry()
    PrometheusSink(registry=registry)
    BudgetMetrics.create(registry=registry)  # the budget guard's gauges, read by the budget alerts
    defined = {family.name for family in registry.collect()}
    defined |= {name + "_total" for name in defined}
    exprs = [expr for _, expr in panel_queries()] + [rule["expr"] for rule in alert_rules()] + readme_queries()
    assert len(readme_queries()) >= 5
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used and used <= defined, used - defined


def test_token_queries_only_match_label_values_the_sink_writes() -> None:
    """A ``type`` or ``kind`` a query matches on ``vital_llm_tokens_total`` is one the sink records (the old
    ``type="cache_read"`` would show nothing)."""
    allowed = {"type": {t for t, _ in TOKEN_KINDS}, "kind": {k for _, k in TOKEN_KINDS}}
    exprs = [expr for _, expr in panel_queries()] + [rule["expr"] for rule in alert_rules()] + readme_queries()
    matched = [(name, value) for expr in exprs for selector in re.findall(r"vital_llm_tokens_total\{([^}]*)\}", expr)
               for name, value in re.findall(r'(\w+)="([^"]*)"', selector) if name in allowed]
    assert {name for name, _ in matched} == {"type", "kind"}
    assert all(value in allowed[name] for name, value in matched), matched
