"""The OpenTelemetry sink: span tree and numbers equal the SQL rows, semconv names, metrics, OTLP/HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
from opentelemetry.trace import StatusCode
from sqlalchemy import select

from tests.graphs import FANOUT, INPUT, METADATA, build_graph
from tests.otlp_receiver import OTLPReceiver
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.runtime.registry import sink_class
from vital_callbacks.sinks.otel import OTelSink, span_id_of, trace_id_of
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.store import schema as tables
from vital_callbacks.testing.fakes import ScriptedChatModel

SEMCONV_NAMES = {getattr(ga, n) for n in dir(ga) if n.startswith("GEN_AI_")}


@dataclass
class Providers:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    sink: OTelSink

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def histogram(self, name: str) -> list[tuple[dict[str, Any], int, float]]:
        data = self.metrics.get_metrics_data()
        return [(dict(p.attributes or {}), p.count, p.sum)
                for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics
                if m.name == name for p in m.data.data_points if isinstance(p, HistogramDataPoint)]


@pytest.fixture
def otel() -> Iterator[Providers]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    yield Providers(exporter, reader, OTelSink(tracer_provider, MeterProvider(metric_readers=[reader])))


def run_graph(sinks: list[Any], *, capture: bool = False, **models: Any) -> VitalCallbackHandler:
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, capture_content=capture), sinks=sinks)
    build_graph(**models).invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
    assert handler.flush()
    return handler


def sql_rows(sink: SQLSink) -> dict[str, tuple[str, Any]]:
    """Every stored row, by run id, with its table's event kind."""
    rows: dict[str, tuple[str, Any]] = {}
    with sink.engine.connect() as conn:
        for kind, table in tables.TABLES.items():
            if kind == "score":
                continue
            for row in conn.execute(select(table)).all():
                rows[row.run_id] = (kind, row)
    return rows


def expected_name(kind: str, row: Any) -> str:
    if kind == "graph_run":
        return f"invoke_agent {row.graph}"
    if kind == "node_run":
        return str(row.node)
    if kind == "llm_call":
        return f"chat {row.requested_model}"
    return f"{'execute_tool' if kind == 'tool_call' else 'retrieval'} {row.name}"


def test_span_tree_and_numbers_equal_the_sql_rows(otel: Providers, tmp_path: Path) -> None:
    """The reference graph gives one span per SQL row, nested and named as the rows' parents say,
    with the rows' token counts and costs."""
    sql = SQLSink(f"sqlite:///{tmp_path / 'vital.db'}")
    handler = run_graph([sql, otel.sink])
    rows = sql_rows(sql)
    spans = otel.finished()
    handler.shutdown()

    assert len(rows) == 1 + (4 + FANOUT) + 2 + FANOUT + 1
    assert len(spans) == len(rows)
    by_run = {span.attributes["vital.run_id"]: span for span in spans}  # type: ignore[index]
    assert set(by_run) == set(rows)
    for run_id, (kind, row) in rows.items():
        span = by_run[run_id]
        assert span.name == expected_name(kind, row)
        assert span.context.trace_id == trace_id_of(row.trace_id)
        assert span.context.span_id == span_id_of(run_id)
        if row.parent_run_id is None:
            assert span.parent is None
        else:
            assert span.parent is not None and span.parent.span_id == span_id_of(row.parent_run_id)
        started = row.started_at.replace(tzinfo=row.started_at.tzinfo or timezone.utc)
        assert abs((span.start_time or 0) / 1e9 - started.timestamp()) < 2e-6  # SQLite keeps microseconds
        attributes = span.attributes or {}
        if kind == "llm_call":
            assert attributes[ga.GEN_AI_USAGE_INPUT_TOKENS] == row.input_tokens
            assert attributes[ga.GEN_AI_USAGE_OUTPUT_TOKENS] == row.output_tokens
            assert attributes[ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == row.cache_read_tokens
            assert attributes[ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == row.cache_write_tokens
            assert attributes[ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == row.reasoning_tokens
            assert attributes["vital.cost.usd"] == float(row.total_cost)
            assert attributes["vital.cost.input_usd"] == float(row.input_cost)
            assert attributes["vital.cost.output_usd"] == float(row.output_cost)
            assert attributes[ga.GEN_AI_PROVIDER_NAME] == row.provider
            assert attributes[ga.GEN_AI_RESPONSE_MODEL] == row.model
            assert attributes[ga.GEN_AI_RESPONSE_FINISH_REASONS] == (row.finish_reason,)
            assert attributes["vital.token_source"] == row.token_source
        if kind == "graph_run":
            assert attributes["vital.usage.input_tokens"] == row.input_tokens == 1600
            assert attributes["vital.usage.output_tokens"] == row.output_tokens == 470
            assert attributes["vital.cost.usd"] == pytest.approx(float(row.cost_usd), rel=1e-9)
        for key in ("tenant_id", "user_id", "session_id", "graph", "node"):
            assert attributes.get(f"vital.{key}") == getattr(row, key)

    names = {span.context.span_id: span.name for span in spans}
    tree = {(span.name, names[span.parent.span_id] if span.parent else None) for span in spans}
    assert tree == {
        ("invoke_agent research_agent", None), ("retrieve", "invoke_agent research_agent"),
        ("retrieval StaticRetriever", "retrieve"), ("plan", "invoke_agent research_agent"),
        ("chat o3-mini", "plan"), ("research", "invoke_agent research_agent"),
        ("execute_tool lookup", "research"), ("summarize", "invoke_agent research_agent"),
        ("draft", "summarize"), ("chat claude-sonnet-4-5", "draft"),
    }


def test_gen_ai_attribute_names_are_the_semconv_constants(otel: Providers) -> None:
    """Every ``gen_ai.*`` attribute the sink writes is a constant of the installed semantic conventions,
    and the chat span carries the ones the issue names."""
    run_graph([otel.sink]).shutdown()
    spans = otel.finished()
    used = {key for span in spans for key in (span.attributes or {}) if key.startswith("gen_ai.")}
    assert used <= SEMCONV_NAMES
    plan = next(s for s in spans if s.name == "chat o3-mini")
    assert {ga.GEN_AI_OPERATION_NAME, ga.GEN_AI_PROVIDER_NAME, ga.GEN_AI_REQUEST_MODEL, ga.GEN_AI_RESPONSE_MODEL,
            ga.GEN_AI_USAGE_INPUT_TOKENS, ga.GEN_AI_USAGE_OUTPUT_TOKENS, ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
            ga.GEN_AI_RESPONSE_FINISH_REASONS, ga.GEN_AI_REQUEST_TEMPERATURE} <= set(plan.attributes or {})
    operations = {s.name.split()[0]: (s.attributes or {}).get(ga.GEN_AI_OPERATION_NAME) for s in spans}
    assert operations["chat"] == ga.GenAiOperationNameValues.CHAT.value
    assert operations["execute_tool"] == ga.GenAiOperationNameValues.EXECUTE_TOOL.value
    assert operations["invoke_agent"] == ga.GenAiOperationNameValues.INVOKE_AGENT.value
    assert operations["retrieval"] == ga.GenAiOperationNameValues.RETRIEVAL.value


def test_gen_ai_metrics_match_the_calls(otel: Providers) -> None:
    """Token usage by type and operation durations are recorded once per call under the semconv names."""
    run_graph([otel.sink]).shutdown()
    usage = otel.histogram(gm.GEN_AI_CLIENT_TOKEN_USAGE)
    by_type: dict[str, float] = {}
    for attributes, _, total in usage:
        by_type[attributes[ga.GEN_AI_TOKEN_TYPE]] = by_type.get(attributes[ga.GEN_AI_TOKEN_TYPE], 0) + total
    assert by_type == {"input": 1600, "output": 470}
    durations = {a[ga.GEN_AI_OPERATION_NAME]: count for a, count, _ in otel.histogram(
        gm.GEN_AI_CLIENT_OPERATION_DURATION) if a.get(ga.GEN_AI_PROVIDER_NAME) != "anthropic"}
    assert durations == {"chat": 1, "execute_tool": FANOUT, "invoke_agent": 1, "retrieval": 1}


def test_streamed_call_records_time_to_first_chunk(otel: Providers) -> None:
    """A streamed call outside any graph is a root chat span with its time to first chunk, also as a metric."""
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[otel.sink])
    model = ScriptedChatModel(model_name="gpt-4o-mini", responses=["one two three"])
    chunks = list(model.stream("hi", config={"callbacks": [handler]}))
    assert chunks and handler.flush()
    handler.shutdown()
    (span,) = otel.finished()
    attributes = span.attributes or {}
    assert span.parent is None and span.name == "chat gpt-4o-mini"
    assert attributes[ga.GEN_AI_REQUEST_STREAM] is True
    assert isinstance(attributes[ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK], float)
    ((_, count, _),) = otel.histogram(gm.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
    assert count == 1


def test_failed_call_is_an_error_span(otel: Providers) -> None:
    """A failing LLM call gives error spans with ``error.type`` and an exception event, up to the root."""
    failing = ScriptedChatModel(model_name="o3-mini", fail_with="upstream timeout")
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[otel.sink])
    with pytest.raises(RuntimeError):
        build_graph(plan_model=failing).invoke(INPUT, config={"callbacks": [handler]})
    handler.shutdown()
    spans = {s.name: s for s in otel.finished()}
    chat = spans["chat o3-mini"]
    assert chat.status.status_code is StatusCode.ERROR
    assert (chat.attributes or {})["error.type"] == "RuntimeError"
    assert [e.name for e in chat.events] == ["exception"]
    assert spans["invoke_agent research_agent"].status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("capture", [False, True])
def test_content_only_with_capture(otel: Providers, capture: bool) -> None:
    """Prompt, completion and tool arguments reach span attributes only with content capture on."""
    run_graph([otel.sink], capture=capture).shutdown()
    keys = {key for span in otel.finished() for key in (span.attributes or {})}
    content = {"vital.prompt", "vital.completion", ga.GEN_AI_TOOL_CALL_ARGUMENTS, ga.GEN_AI_TOOL_CALL_RESULT,
               ga.GEN_AI_RETRIEVAL_QUERY_TEXT}
    assert (content <= keys) if capture else not (content & keys)


def test_otlp_http_export_decodes_to_the_same_spans(otel: Providers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans sent over OTLP/HTTP to a receiver on 127.0.0.1 decode to the in-memory ones; a refused
    request is retried by the pipeline without duplicating spans or metrics."""
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")  # with no meter provider of the app's: asked for
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        receiver.fail_next = 1
        wire = OTelSink(use_global=False)
        handler = VitalCallbackHandler(Settings(flush_interval_s=0.05, retry_backoff_s=0.05),
                                       sinks=[otel.sink, wire])
        build_graph().invoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
        assert handler.flush()
        stats = handler.stats()
        handler.shutdown()
        received = receiver.spans()
        metric_names = receiver.metric_names()
        token_usage = receiver.histogram(gm.GEN_AI_CLIENT_TOKEN_USAGE)

    assert receiver.failed == 1 and stats["failed_exports"].get("otel") == 1 and not stats["dropped"]
    local = {s.context.span_id: s for s in otel.finished()}
    assert len(received) == len(local)
    for got in received:
        want = local[got.span_id]
        assert got.name == want.name and got.trace_id == want.context.trace_id
        assert got.parent_span_id == (want.parent.span_id if want.parent else None)
        assert (got.start_time_unix_nano, got.end_time_unix_nano) == (want.start_time, want.end_time)
        assert got.kind == want.kind.value + 1  # the protobuf enum reserves 0 for "unspecified"
        assert got.attributes == dict(want.attributes or {})
        assert got.scope == "vital_callbacks" and got.resource["service.name"] == "vital-callbacks"
    assert {gm.GEN_AI_CLIENT_TOKEN_USAGE, gm.GEN_AI_CLIENT_OPERATION_DURATION} <= metric_names
    assert sum(total for a, _, total in token_usage if a[ga.GEN_AI_TOKEN_TYPE] == "input") == 1600


_GLOBAL_SCRIPT = textwrap.dedent("""
    import json
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from tests.graphs import INPUT, build_graph
    from vital_callbacks import Settings, VitalCallbackHandler

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    handler = VitalCallbackHandler(Settings(sinks=["otel"], flush_interval_s=0.05))
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    handler.shutdown()
    with trace.get_tracer("app").start_as_current_span("after-shutdown"):
        pass
    names = [s.name for s in exporter.get_finished_spans()]
    data = reader.get_metrics_data()
    metric_names = sorted({m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics})
    print(json.dumps({"names": names, "metrics": metric_names}))
""")


def test_global_providers_are_used_and_left_running(tmp_path: Path) -> None:
    """``VITAL_SINKS=otel`` sends to the application's global providers and never shuts them down."""
    env = {"PATH": "", "PYTHONPATH": str(Path(__file__).parents[2]), "VITAL_DATABASE_URL": "sqlite://"}
    result = subprocess.run([sys.executable, "-c", _GLOBAL_SCRIPT], capture_output=True, text=True, env=env,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "invoke_agent research_agent" in out["names"] and out["names"][-1] == "after-shutdown"
    assert gm.GEN_AI_CLIENT_TOKEN_USAGE in out["metrics"]


def test_entry_points_load() -> None:
    """Both sinks are found by name in the ``vital_callbacks.sinks`` group."""
    from vital_callbacks.sinks.logs import LogSink

    assert sink_class("otel") is OTelSink
    assert sink_class("logs") is LogSink
