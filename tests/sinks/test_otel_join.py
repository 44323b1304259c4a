"""OpenTelemetry inside an instrumented application (issue 19, point 3): a trace invoked inside the app's
span joins it (same trace id, our root span its child), in one process with the SDK and over OTLP/HTTP;
metrics go to the app's meter provider only when it set one; nothing is shut down twice at exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.graphs import INPUT, METADATA, build_graph
from tests.otlp_receiver import OTLPReceiver
from vital_callbacks import Settings, VitalCallbackHandler
from vital_callbacks.sinks.otel import OTelSink

ROOT = Path(__file__).parents[2]


def app_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def ours(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == "vital_callbacks"]


def test_a_trace_inside_the_apps_span_joins_it() -> None:
    """Two concurrent requests, each inside its own ``POST /chat`` span: every span of each trace has
    that request's trace id, the graph's span is the request span's child, the rest nest under ours."""
    provider, exporter = app_provider()
    sink = OTelSink(provider, MeterProvider(metric_readers=[InMemoryMetricReader()]))
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[sink])
    tracer = provider.get_tracer("app")
    graph = build_graph()

    async def request(n: int) -> tuple[int, int]:
        with tracer.start_as_current_span(f"POST /chat {n}") as span:
            await graph.ainvoke(INPUT, config={"callbacks": [handler], "metadata": METADATA})
            context = span.get_span_context()
            return context.trace_id, context.span_id

    async def main() -> list[tuple[int, int]]:
        return list(await asyncio.gather(request(0), request(1)))

    requests = asyncio.run(main())
    assert handler.flush()
    spans = ours(list(exporter.get_finished_spans()))
    for trace_id, span_id in requests:
        mine = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
        ids = {s.context.span_id for s in mine if s.context is not None}
        [root] = [s for s in mine if s.name.startswith("invoke_agent")]
        assert root.parent is not None and root.parent.span_id == span_id
        assert all(s.parent is not None and s.parent.span_id in ids for s in mine if s is not root)
        assert len(mine) == len(spans) // 2 > 3
    handler.shutdown()


def test_outside_any_span_a_trace_is_its_own() -> None:
    provider, exporter = app_provider()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[OTelSink(provider, MeterProvider())])
    build_graph().invoke(INPUT, config={"callbacks": [handler]})
    assert handler.flush()
    [root] = [s for s in ours(list(exporter.get_finished_spans())) if s.name.startswith("invoke_agent")]
    assert root.parent is None and handler.last_trace_id is not None
    assert root.context is not None and f"{root.context.trace_id:032x}" == handler.last_trace_id.replace("-", "")
    handler.shutdown()


def test_over_otlp_http_the_received_spans_join_the_apps_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's own OTLP/HTTP exporter, the application's span from its own SDK provider: what the
    receiver decodes carries the application's trace id and parent span id. The endpoint is set, so
    the metrics go there too."""
    provider, _ = app_provider()
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
        handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[OTelSink(use_global=False)])
        with provider.get_tracer("app").start_as_current_span("POST /chat") as span:
            build_graph().invoke(INPUT, config={"callbacks": [handler]})
        assert handler.flush()
        handler.shutdown()
        received = receiver.spans()
        metric_names = receiver.metric_names()
    context = span.get_span_context()
    assert received and {s.trace_id for s in received} == {context.trace_id}
    [root] = [s for s in received if s.name.startswith("invoke_agent")]
    assert root.parent_span_id == context.span_id
    assert "gen_ai.client.token.usage" in metric_names


_APP_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from tests.graphs import INPUT, build_graph
    from vital_callbacks import Settings, VitalCallbackHandler

    logging.basicConfig(level=logging.WARNING)
    exporter = InMemorySpanExporter()
    if sys.argv[1] == "app-tracer":
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    handler = VitalCallbackHandler(Settings(sinks=["otel"], flush_interval_s=0.05))
    with trace.get_tracer("app").start_as_current_span("POST /chat"):
        build_graph().invoke(INPUT, config={"callbacks": [handler]})
    ok = handler.flush()
    [sink] = handler.runtime.sinks
    print(json.dumps({"ok": ok, "spans": len(exporter.get_finished_spans()),
                      "meter": type(sink.meter_provider).__name__}))
""")


@pytest.mark.parametrize("setup", ["app-tracer", "no-provider"])
def test_an_app_with_tracing_alone_gets_no_metrics_and_one_shutdown(setup: str, tmp_path: Path) -> None:
    """A process with ``VITAL_SINKS=otel``: with only the app's ``TracerProvider`` and no OTLP endpoint
    (nothing listening on 4318): no metrics, no "connection refused"; with no provider at all and an
    endpoint set, the sink's own providers export there. Either way, no "shutdown can only be called
    once" at exit."""
    with OTLPReceiver() as receiver:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "VITAL_DATABASE_URL": "sqlite://",
               "VITAL_JOURNAL": "false"}
        if setup == "no-provider":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        result = subprocess.run([sys.executable, "-c", _APP_SCRIPT, setup], capture_output=True, text=True,
                                env=env, cwd=tmp_path, check=False, timeout=120)
        received = receiver.spans()
        metric_names = receiver.metric_names()
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["meter"] == ("NoOpMeterProvider" if setup == "app-tracer" else "MeterProvider")
    for noise in ("shutdown can only be called once", "Connection refused", "Failed to export", "Traceback"):
        assert noise not in result.stderr, result.stderr
    if setup == "app-tracer":
        assert out["spans"] > 3  # ours and the app's, through the app's provider
    else:
        assert len(received) > 3 and len({s.trace_id for s in received}) == 1
        assert "gen_ai.client.token.usage" in metric_names  # exported at the sink's own shutdown, at exit
