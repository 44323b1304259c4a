"""Multiprocess mode: worker processes record into PROMETHEUS_MULTIPROC_DIR; one exposition sums them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.integrations.promql import ROOT
from vital_callbacks.sinks.prometheus.exposition import exposition_registry


def test_two_processes_one_exposition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker processes' counters, tokens and costs add up in the exposition read from the shared directory."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.integrations.mp_worker", tenant, str(runs)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
               for tenant, runs in (("acme", 3), ("globex", 2))]
    outputs = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file set per process

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = exposition_registry()

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert sample("vital_graph_runs_total", graph="research_agent", status="success") == 5
    assert sample("vital_node_executions_total", graph="research_agent", subgraph="", node="plan",
                  status="success") == 5
    requests = {"provider": "openai", "model": "o3-mini", "status": "success"}
    assert sample("vital_llm_requests_total", **requests, tenant="acme") == 3
    assert sample("vital_llm_requests_total", **requests, tenant="globex") == 2
    total = sum(Decimal(o["cost"]) for o in outputs)
    recorded = sum(sample("vital_llm_cost_usd_total", provider=p, model=m, tenant=t)
                   for p, m in (("openai", "o3-mini"), ("anthropic", "claude-sonnet-4-5"))
                   for t in ("acme", "globex"))
    assert recorded == pytest.approx(float(total))
    assert sample("vital_graph_cost_usd_count", graph="research_agent") == 5
    tokens = [s for family in registry.collect() for s in family.samples if s.name == "vital_llm_tokens_total"]
    assert sum(s.value for s in tokens) == sum(o["tokens"] for o in outputs) > 0
    text = generate_latest(registry).decode()
    assert text.count("vital_build_info{") == 1  # max across processes: one series, not one per pid
    assert 'vital_events_dropped_total{reason="queue full",sink="prometheus"} 0.0' in text
