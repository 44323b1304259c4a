"""Quality scores: attached to the right run or trace, in SQL, Prometheus and Langfuse, never lost."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import text

from tests.graphs import INPUT, METADATA, build_graph
from tests.langfuse_receiver import LangfuseReceiver
from vital_callbacks import GraphRun, InMemorySink, LLMCall, Score, Settings, VitalCallbackHandler, score
from vital_callbacks.sinks.langfuse import LangfuseSink, trace_id_for
from vital_callbacks.sinks.prometheus import PrometheusSink
from vital_callbacks.sinks.sql import SQLSink


def scores(sql: SQLSink) -> dict[str, dict[str, object]]:
    with sql.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM scores")).mappings().all()
    return {str(r["name"]): dict(r) for r in rows}


def test_scores_by_run_id_and_trace_id_land_on_the_right_rows(tmp_path: Path) -> None:
    """A score for an LLM call's run id and one for the trace id carry that run's trace and attribution."""
    sql, memory = SQLSink(f"sqlite:///{tmp_path / 's.db'}"), InMemorySink()
    handler = VitalCallbackHandler(Settings(), sinks=[sql, memory])
    build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    handler.flush()
    (root,) = memory.of(GraphRun)
    plan = next(c for c in memory.of(LLMCall) if c.node == "plan")
    handler.score(plan.run_id, "helpfulness", 0.9, comment="good plan")
    handler.score(handler.last_trace_id or "", "thumbs_up", True)
    handler.score(root.run_id, "topic", "billing")
    handler.flush()
    rows = scores(sql)
    assert rows["helpfulness"]["run_id"] == plan.run_id and rows["helpfulness"]["trace_id"] == root.run_id
    assert rows["helpfulness"]["node"] == "plan" and rows["helpfulness"]["tenant_id"] == "acme"
    assert rows["helpfulness"]["value"] == 0.9 and rows["helpfulness"]["comment"] == "good plan"
    assert rows["thumbs_up"]["trace_id"] == root.run_id and rows["thumbs_up"]["data_type"] == "boolean"
    assert rows["thumbs_up"]["value"] == 1.0
    assert rows["topic"]["string_value"] == "billing" and rows["topic"]["value"] is None
    assert all(r["matched"] for r in rows.values())
    handler.shutdown()


def test_a_score_for_a_run_still_in_the_queue(tmp_path: Path) -> None:
    """Scoring right after the run, before its events were written, still attaches the score."""
    sql = SQLSink(f"sqlite:///{tmp_path / 's.db'}")
    sql.prepare()
    handler = VitalCallbackHandler(Settings(batch_size=100_000, flush_interval_s=60), sinks=[sql])
    build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    with sql.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM graph_runs")).scalar_one() == 0  # still queued
    handler.score(handler.last_trace_id or "", "accuracy", 0.4)
    handler.flush()
    row = scores(sql)["accuracy"]
    assert row["matched"] and row["trace_id"] == handler.last_trace_id and row["user_id"] == "u1"
    handler.shutdown()


def test_a_late_score_from_another_process_is_matched_by_the_store(tmp_path: Path) -> None:
    """The standalone score() (no memory of the run) is matched to the stored run by the SQL sink."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    handler = VitalCallbackHandler(Settings(database_url=url))
    build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    trace = handler.last_trace_id or ""
    handler.shutdown()
    score(trace, "user_feedback", 0.2, settings=Settings(database_url=url, flush_interval_s=0.05))
    late = VitalCallbackHandler(Settings(database_url=url, flush_interval_s=0.05))
    late.flush()
    row = scores(SQLSink(url))["user_feedback"]
    assert row["matched"] and row["trace_id"] == trace and row["tenant_id"] == "acme"
    late.shutdown()


def test_a_score_for_an_unknown_id_is_stored_and_flagged(tmp_path: Path) -> None:
    """An id nobody recorded is kept with matched = false, not dropped."""
    sql = SQLSink(f"sqlite:///{tmp_path / 's.db'}")
    handler = VitalCallbackHandler(Settings(), sinks=[sql])
    handler.score("no-such-run", "accuracy", 1)
    handler.flush()
    row = scores(sql)["accuracy"]
    assert row["matched"] is False or row["matched"] == 0
    assert row["target_id"] == "no-such-run" and row["trace_id"] == "no-such-run"
    handler.shutdown()


def test_scores_reach_prometheus_and_langfuse() -> None:
    """The quality histogram counts the score; Langfuse gets it through the SDK's score API on the trace."""
    registry = CollectorRegistry()
    with LangfuseReceiver() as rx:
        lf = LangfuseSink(secret_key="sk-lf-test", public_key="pk-lf-scores", base_url=rx.url)
        memory = InMemorySink()
        handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[PrometheusSink(registry=registry),
                                                                          lf, memory])
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        handler.flush()
        plan = next(c for c in memory.of(LLMCall) if c.node == "plan")
        handler.score(plan.run_id, "quality", 0.5)
        assert handler.flush()
        handler.shutdown()
        bodies = list(rx.scores)
    (event,) = memory.of(Score)
    assert registry.get_sample_value("vital_quality_score_count", {"name": "quality", "graph": "research_agent"}) == 1
    assert registry.get_sample_value("vital_quality_score_sum", {"name": "quality", "graph": "research_agent"}) == 0.5
    assert len(bodies) == 1
    assert bodies[0]["name"] == "quality" and bodies[0]["value"] == 0.5
    assert bodies[0]["traceId"] == trace_id_for(event.trace_id)
    assert bodies[0]["observationId"] is not None
